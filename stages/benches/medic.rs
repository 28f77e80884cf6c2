//! MEDIC throughput on the bundled Delphes sample, W = 30, reference sizes:
//! window assembly (worker side), training steps (forward, backward, Adam;
//! batch 64) fed by the prefetching loader in both encode modes, and
//! ensemble-member inference (batch 256, no gradients) per window and
//! streaming (each event encoded once, rolling buffer). Runs on CUDA when
//! libtorch sees a GPU.
//!
//! `cargo bench -p dqm-stages --bench medic` (or `--workspace`)

use std::time::Instant;

use dqm_stages::in_memory::{input_from_batch, run_in_memory};
use dqm_stages::medic::batches::{Encode, WindowData, inference_draws, prefetched};
use dqm_stages::medic::delphes_convert::DelphesConvert;
use dqm_stages::medic::medic_infer::RollingEmbeddings;
use dqm_stages::medic::medic_train::MedicTrain;
use dqm_stages::medic::model::{Medic, MedicArch, WindowHead, consecutive_slots, kl_per_window};
use dqm_stages::medic::sliding_windows::SlidingWindows;
use dqm_stages::medic::streaming::StreamingMedic;
use dqm_stages::medic::tables::WindowSpec;
use dqm_stages::simd::{Isa, PackedLinear};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

/// Wall time between consecutive calls of [`Timer::tick`], after the
/// first `warmup` (allocator, kernels) are left out.
struct Timer {
    warmup: usize,
    n: usize,
    measured: f64,
    last: Instant,
}

impl Timer {
    fn new(warmup: usize) -> Self {
        Self {
            warmup,
            n: 0,
            measured: 0.0,
            last: Instant::now(),
        }
    }

    /// Ends one step; whether it was timed.
    fn tick(&mut self) -> bool {
        self.n += 1;
        let timed = self.n > self.warmup;
        if timed {
            self.measured += self.last.elapsed().as_secs_f64();
        }
        self.last = Instant::now();
        timed
    }
}

/// `rate(folded)` for the network as trained (false) and the streaming
/// path (true), alternated five times — this machine's speed drifts by
/// tens of per cent from minute to minute — as [min, median, max] of each.
fn alternated(mut rate: impl FnMut(bool) -> f64) -> [[f64; 3]; 2] {
    // DQM_BENCH_STREAMING_ONLY=1: the streaming path only (for a profile;
    // the as-trained figures then print as 0).
    let only = std::env::var("DQM_BENCH_STREAMING_ONLY").is_ok_and(|v| v == "1");
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for folded in [false, true] {
            let skip = only && !folded;
            rates[usize::from(folded)].push(if skip { 0.0 } else { rate(folded) });
        }
    }
    rates.map(|mut r| {
        r.sort_by(f64::total_cmp);
        [r[0], r[2], r[4]]
    })
}

fn main() {
    let device = dqm_stages::nn::device();
    let dir = tempfile::tempdir().unwrap();
    let convert = DelphesConvert {
        pattern: Some(format!(
            "{}/../data/delphes/dijet13_{{label}}_tiny.root",
            env!("CARGO_MANIFEST_DIR")
        )),
        ..Default::default()
    };
    let events = run_in_memory(&convert, &[]).unwrap().table("main");
    let events = input_from_batch("events", &events, &dir.path().join("e.parquet")).unwrap();
    let cfg = SlidingWindows(WindowSpec {
        window: 30,
        seed: 1,
        ..Default::default()
    });
    let out = run_in_memory(&cfg, std::slice::from_ref(&events)).unwrap();
    let windows =
        input_from_batch("windows", &out.table("main"), &dir.path().join("w.parquet")).unwrap();
    let order =
        input_from_batch("order", &out.table("order"), &dir.path().join("o.parquet")).unwrap();
    let data = WindowData::load(&[windows, order, events]).unwrap();
    let rows: Vec<usize> = (0..data.rows.len()).collect();
    println!(
        "device {device:?}, torch threads {}, rayon threads {}, {} windows of W = 30",
        tch::get_num_threads(),
        rayon::current_num_threads(),
        rows.len()
    );

    let batches: Vec<Vec<usize>> = rows.chunks(64).map(<[usize]>::to_vec).collect();
    let start = Instant::now();
    for b in &batches {
        data.batch(b, tch::Device::Cpu).unwrap();
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "assembly:  {:>8.0} windows/s ({} batches of 64)",
        rows.len() as f64 / t,
        batches.len()
    );

    tch::manual_seed(0);
    let net = |window_head, width| {
        let vs = nn::VarStore::new(device);
        let model = Medic::new(
            &vs.root(),
            MedicArch {
                window_head,
                embed: width,
                feed_forward: width,
                ..MedicArch::default()
            },
        );
        (vs, model)
    };
    let (vs, model) = net(WindowHead::Cnn, 128);
    let (vs_mean, event_mean) = net(WindowHead::EventMean, 128);
    let (vs_small, small) = net(WindowHead::EventMean, 32);
    // The width of the distilled student (`pipelines/medic_distill.yaml`).
    let (_vs_student, student) = net(WindowHead::EventMean, 64);
    let (_vs_wide, wide) = net(WindowHead::EventMean, 96);
    let steps = 12.min(batches.len());
    // The training batches of each mode, made by `medic_train` itself.
    let epoch = |encode, contiguous_windows| {
        MedicTrain {
            encode,
            contiguous_windows,
            batch_size: 64,
            ..Default::default()
        }
        .epoch_batches(&data, &rows, &mut ChaCha8Rng::seed_from_u64(1))
    };
    let random = epoch(Encode::Window, 1);
    let runs_of = |run| epoch(Encode::Event, run);
    let mut train_rate = Vec::new();
    // DQM_BENCH_TRAIN=0: inference only.
    let train = std::env::var("DQM_BENCH_TRAIN").map_or(true, |v| v != "0");
    // DQM_BENCH_ONLY=label: only that streaming model (e.g. "event-mean
    // window head", the main job's width 128).
    let only = std::env::var("DQM_BENCH_ONLY").ok();
    for (what, vs, model, encode, batches) in [
        (
            "window, CNN head (paper)",
            &vs,
            &model,
            Encode::Window,
            random,
        ),
        (
            "event, CNN head, runs of 16",
            &vs,
            &model,
            Encode::Event,
            runs_of(16),
        ),
        (
            "event, CNN head, runs of 64",
            &vs,
            &model,
            Encode::Event,
            runs_of(64),
        ),
        (
            "event, event-mean head, runs of 64 (main job)",
            &vs_mean,
            &event_mean,
            Encode::Event,
            runs_of(64),
        ),
        (
            "event, event-mean head, embed 32, runs of 64",
            &vs_small,
            &small,
            Encode::Event,
            runs_of(64),
        ),
    ]
    .into_iter()
    .filter(|_| train)
    {
        let mut opt = nn::Adam::default().build(vs, 1e-3).unwrap();
        let (mut timer, mut encoded) = (Timer::new(2), 0);
        prefetched(
            &batches[..steps],
            4,
            |b| data.model_batch(b, encode, 7, device),
            |b| {
                let out = b.forward(model, true);
                let loss = kl_per_window(b.target(), &out.log_probs).mean(Kind::Float);
                opt.backward_step(&loss);
                let _ = loss.double_value(&[]);
                if timer.tick() {
                    encoded += out.event_class.size()[0];
                }
                Ok(())
            },
        )
        .unwrap();
        let trained: usize = batches[2..steps].iter().map(Vec::len).sum();
        let rate = trained as f64 / timer.measured;
        train_rate.push(rate);
        println!(
            "training, encode {what}: {rate:>8.1} windows/s ({:.1}x; batch 64, {} timed steps, {:.0} events encoded per batch)",
            rate / train_rate[0],
            steps - 2,
            encoded as f64 / (steps - 2) as f64
        );
    }

    // Inference over consecutive stride-1 windows: each arriving event
    // opens one new window, so windows/s is the streaming rate in events/s.
    // Every window, three times over (batches of 256; the first untimed).
    let infer: Vec<Vec<usize>> = (0..3)
        .flat_map(|_| rows.chunks(256).map(<[usize]>::to_vec))
        .collect();
    let scored: usize = infer[1..].iter().map(Vec::len).sum();
    // The paper's per-window mode, slower by far: 5 batches.
    let streaming_only = std::env::var("DQM_BENCH_STREAMING_ONLY").is_ok_and(|v| v == "1");
    let few = &infer[..5];
    let few_scored: usize = few[1..].iter().map(Vec::len).sum();
    let mut timer = Timer::new(1);
    tch::no_grad(|| {
        if streaming_only {
            return Ok(());
        }
        data.for_each_batch(few, device, 4, |b| {
            let p = model.forward(&b.tracks, &b.towers, &b.met, false).exp();
            let _ = p.double_value(&[0, 0]);
            timer.tick();
            Ok(())
        })
    })
    .unwrap();
    let per_window = few_scored as f64 / timer.measured;
    println!(
        "inference, encode Window: {per_window:>8.1} windows/s = events/s streaming ({:.0} event encodings/s; batch 256)",
        30.0 * per_window
    );
    let seed = inference_draws(&data.cfg);
    // Today's path (the network as trained) and the streaming one (input
    // projections folded into attention, the event-mean head once per
    // event), side by side.
    let streaming = |model: &Medic, folded: bool| {
        let fast = StreamingMedic::new(model);
        // As `medic_infer` runs the event-mean head's streaming path.
        let event_mean = model.arch.window_head == WindowHead::EventMean;
        let _one = (folded && event_mean).then(dqm_stages::nn::one_thread);
        let mut timer = Timer::new(1);
        let mut buffer = RollingEmbeddings::default();
        tch::no_grad(|| {
            prefetched(
                &infer,
                4,
                |b| data.event_batch(b, seed, device),
                |b| {
                    let p = if folded {
                        let (events, _) = buffer.embed(&fast, &b);
                        fast.score_windows(&events, &b.slots)
                    } else {
                        let encode =
                            |t: &Tensor, w: &Tensor, m: &Tensor| model.encode(t, w, m, false);
                        let (events, _) = buffer.embed_with(model.arch.embed, encode, &b);
                        model.score_windows(&events, &b.slots, false).windows
                    }
                    .exp();
                    let _ = p.double_value(&[0, 0]);
                    timer.tick();
                    Ok(())
                },
            )
        })
        .unwrap();
        scored as f64 / timer.measured
    };
    // Events each window brings: 1 in one long run, more here (windows do
    // not cross the bundled sample's run boundaries, so a run's first
    // window brings W events). Events/s counts each event once.
    let mut previous: Vec<usize> = Vec::new();
    let mut fresh = 0usize;
    for (i, rows) in infer.iter().enumerate() {
        let b = data.event_batch(rows, seed, device).unwrap();
        if i > 0 {
            fresh += b
                .positions
                .iter()
                .filter(|p| previous.binary_search(p).is_err())
                .count();
        }
        previous = b.positions;
    }
    let events_per_window = fresh as f64 / scored as f64;
    println!("events per window in the stream: {events_per_window:.3}");
    for (what, model) in [
        ("CNN window head", &model),
        ("event-mean window head", &event_mean),
        ("event-mean window head, embed 96", &wide),
        (
            "event-mean window head, embed 64 (distilled student)",
            &student,
        ),
        ("event-mean window head, embed 32", &small),
    ]
    .into_iter()
    .filter(|(what, _)| only.as_ref().is_none_or(|o| what == o))
    {
        let rates = alternated(|folded| streaming(model, folded));
        for (path, [lo, median, hi]) in ["as trained", "streaming path"].into_iter().zip(rates) {
            println!(
                "inference, encode Event (rolling buffer), {what}, {path}: {median:>8.1} windows/s, {:.0} events/s ({:.1}x; median of 5, range {lo:.0}-{hi:.0} windows/s)",
                median * events_per_window,
                median / per_window,
            );
        }
    }
    // The 5-fold ensemble as `medic_infer` streams it: each batch assembled
    // once, each event encoded by five width-128 networks (untrained, each
    // its own weights) with a rolling buffer each. DQM_BENCH_ONLY="5-fold
    // ensemble" runs only this.
    if only.as_ref().is_none_or(|o| o == "5-fold ensemble") {
        let folds: Vec<_> = (0..5).map(|_| net(WindowHead::EventMean, 128)).collect();
        let fast: Vec<StreamingMedic<'_>> =
            folds.iter().map(|(_, m)| StreamingMedic::new(m)).collect();
        let _one = dqm_stages::nn::one_thread();
        let mut rates: Vec<f64> = (0..5)
            .map(|_| {
                let mut timer = Timer::new(1);
                let mut buffers: Vec<RollingEmbeddings> =
                    fast.iter().map(|_| RollingEmbeddings::default()).collect();
                tch::no_grad(|| {
                    prefetched(
                        &infer,
                        4,
                        |b| data.event_batch(b, seed, device),
                        |b| {
                            for (model, buffer) in fast.iter().zip(&mut buffers) {
                                let (events, _) = buffer.embed(model, &b);
                                let p = model.score_windows(&events, &b.slots).exp();
                                let _ = p.double_value(&[0, 0]);
                            }
                            timer.tick();
                            Ok(())
                        },
                    )
                })
                .unwrap();
                scored as f64 / timer.measured * events_per_window
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "inference, 5-fold ensemble (event-mean head, width 128), streaming path as medic_infer runs it: {:>8.0} events/s (median of 5, range {:.0}-{:.0})",
            rates[2], rates[0], rates[4]
        );
    }
    // The event encoders alone (tracks, towers, MET) on the events of 256
    // windows: the network as trained and the streaming path, alternated.
    let b = data.event_batch(&rows[..256], seed, device).unwrap();
    let m = b.tracks.size()[0];
    for (what, model) in [("", &event_mean), (", embed 32", &small)] {
        let fast = StreamingMedic::new(model);
        let rates = alternated(|folded| {
            let start = Instant::now();
            // As `medic_infer` runs it: libtorch (MET, heads) on one
            // thread, the kernels on the rayon pool.
            let _one = folded.then(dqm_stages::nn::one_thread);
            tch::no_grad(|| {
                for _ in 0..4 {
                    let e = if folded {
                        fast.encode(&b.tracks, &b.towers, &b.met)
                    } else {
                        model.encode(&b.tracks, &b.towers, &b.met, false)
                    };
                    let _ = e.double_value(&[0, 0, 0]);
                }
            });
            4.0 * m as f64 / start.elapsed().as_secs_f64()
        });
        for (path, [lo, median, hi]) in ["as trained", "streaming path"].into_iter().zip(rates) {
            println!(
                "event encoders alone{what}, {path}: {median:>8.0} events/s ({m} events; median of 5, range {lo:.0}-{hi:.0})"
            );
        }
    }
    // The kernels' dense layer alone: a tile's 480 rows through 128 × 128.
    let (rows_n, k) = (480, 128);
    let w: Vec<f32> = (0..k * k).map(|i| (i % 7) as f32 * 0.01).collect();
    let a: Vec<f32> = (0..rows_n * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let layer = PackedLinear::new(&w, &vec![0.1; k], k, k);
    let mut out = vec![0f32; rows_n * k];
    for isa in Isa::available() {
        if streaming_only && isa == Isa::Scalar {
            continue;
        }
        let reps = 500;
        let start = Instant::now();
        for _ in 0..reps {
            layer.apply(isa, &a, rows_n, &mut out, true);
        }
        let flops = 2.0 * (rows_n * k * k * reps) as f64;
        println!(
            "dense layer 480 x 128 x 128, {isa:?}, one thread: {:>6.1} GFLOP/s",
            flops / start.elapsed().as_secs_f64() / 1e9
        );
    }
    // What the window part alone (CNN + head) allows, for the ceiling.
    if streaming_only {
        return;
    }
    let events = Tensor::randn([256 * 30, 3, 128], (Kind::Float, device));
    let slots = consecutive_slots(256, 30, device);
    let start = Instant::now();
    tch::no_grad(|| {
        for _ in 0..4 {
            let scores = model.score_windows(&events, &slots, false);
            let _ = scores.windows.double_value(&[0, 0]);
        }
    });
    println!(
        "window part alone (CNN + head): {:>8.1} windows/s",
        1024.0 / start.elapsed().as_secs_f64()
    );
}
