//! Progress reporting: indicatif bars on a terminal, plain timestamped log
//! lines otherwise (CI, batch jobs), so logs stay readable in both.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dqm_stages::stage::{Progress, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared by all stages of one run.
pub struct Console {
    bars: Option<MultiProgress>,
    start: Instant,
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Console {
    pub fn new() -> Self {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            bars,
            start: Instant::now(),
        }
    }

    /// A log line above the bars (or on stderr).
    pub fn log(&self, message: &str) {
        let line = format!("[{:>7.1}s] {message}", self.start.elapsed().as_secs_f64());
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// The reporter handed to one stage.
    pub fn reporter<'a>(&'a self, stage: &str) -> StageReporter<'a> {
        StageReporter {
            console: self,
            stage: stage.to_string(),
        }
    }
}

pub struct StageReporter<'a> {
    console: &'a Console,
    stage: String,
}

impl Reporter for StageReporter<'_> {
    fn progress(&self, total: u64, unit: &str) -> Box<dyn Progress> {
        match &self.console.bars {
            Some(bars) => {
                let bar = if total > 0 {
                    ProgressBar::new(total)
                } else {
                    ProgressBar::new_spinner()
                };
                let template = if total > 0 {
                    "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({eta})"
                } else {
                    "{prefix:>12} {spinner} {pos} {msg}"
                };
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(self.stage.clone());
                bar.set_message(unit.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                Box::new(BarProgress(bars.add(bar)))
            }
            None => Box::new(LogProgress {
                console_start: self.console.start,
                stage: self.stage.clone(),
                unit: unit.to_string(),
                total,
                done: AtomicU64::new(0),
                last: Mutex::new(Instant::now()),
                printed: AtomicU64::new(0),
            }),
        }
    }

    fn info(&self, message: &str) {
        self.console.log(&format!("{}: {message}", self.stage));
    }
}

struct BarProgress(ProgressBar);

impl Progress for BarProgress {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Writes a line at most every 5 seconds, and one at the end.
struct LogProgress {
    console_start: Instant,
    stage: String,
    unit: String,
    total: u64,
    done: AtomicU64,
    last: Mutex<Instant>,
    /// The count of the last line written, so the final line is not a repeat.
    printed: AtomicU64,
}

impl LogProgress {
    fn line(&self, done: u64) {
        self.printed.store(done, Ordering::Relaxed);
        let of = if self.total > 0 {
            format!("/{}", self.total)
        } else {
            String::new()
        };
        eprintln!(
            "[{:>7.1}s] {}: {done}{of} {}",
            self.console_start.elapsed().as_secs_f64(),
            self.stage,
            self.unit
        );
    }
}

impl Progress for LogProgress {
    fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last.lock().expect("not poisoned");
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            self.line(done);
        }
    }
}

impl Drop for LogProgress {
    fn drop(&mut self) {
        let done = self.done.load(Ordering::Relaxed);
        if done > 0 && done != self.printed.load(Ordering::Relaxed) {
            self.line(done);
        }
    }
}
