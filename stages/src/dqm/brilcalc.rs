//! Per-LS luminosity as the CMS luminosity tool (brilcalc, `--byls
//! --output-style csv`) writes it, as a library: comment lines start with
//! `#`; one of them names the columns (`#run:fill,ls,time,beamstatus,
//! E(GeV),delivered(/ub),recorded(/ub),avgpu,source`), and its unit is the
//! file's (`/ub`, `/pb`, ...); data lines are `355100:8102,1:1,...`.

/// One LS of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct LumiRow {
    pub run: i64,
    pub fill: i64,
    pub ls: i64,
    pub time: String,
    pub beam_status: String,
    /// Beam energy (GeV).
    pub energy: f64,
    /// Delivered and recorded luminosity, in the file's unit.
    pub delivered: f64,
    pub recorded: f64,
    /// Average pile-up.
    pub avgpu: f64,
    /// The luminometer.
    pub source: String,
}

/// A parsed file: its rows and the luminosity unit of its header (`/ub`).
#[derive(Debug, Clone, PartialEq)]
pub struct LumiFile {
    pub unit: String,
    pub rows: Vec<LumiRow>,
}

/// Where each field is on a data line.
struct Layout {
    run_fill: usize,
    ls: usize,
    time: Option<usize>,
    beam_status: Option<usize>,
    energy: Option<usize>,
    delivered: usize,
    recorded: usize,
    avgpu: Option<usize>,
    source: Option<usize>,
    unit: String,
}

fn layout(header: &str) -> Result<Layout, String> {
    let names: Vec<String> = header
        .trim_start_matches('#')
        .split(',')
        .map(|n| n.trim().to_lowercase())
        .collect();
    let find = |prefix: &str| names.iter().position(|n| n.starts_with(prefix));
    let need = |prefix: &str| {
        find(prefix).ok_or_else(|| format!("the header has no `{prefix}` column: `{header}`"))
    };
    let delivered = need("delivered")?;
    let unit = names[delivered]
        .split_once('(')
        .and_then(|(_, u)| u.strip_suffix(')'))
        .unwrap_or("")
        .to_string();
    Ok(Layout {
        run_fill: need("run:fill")?,
        ls: names
            .iter()
            .position(|n| n == "ls" || n == "ls:ls")
            .ok_or_else(|| format!("the header has no `ls` column: `{header}`"))?,
        time: find("time"),
        beam_status: find("beamstatus"),
        energy: find("e("),
        delivered,
        recorded: need("recorded")?,
        avgpu: find("avgpu"),
        source: find("source"),
        unit,
    })
}

/// The first number of `a:b` (or of `a`).
fn first_number(field: &str) -> Option<i64> {
    field.split(':').next()?.trim().parse().ok()
}

/// Parses a brilcalc CSV's text; an error names the line.
pub fn parse(text: &str) -> Result<LumiFile, String> {
    let mut layout: Option<Layout> = None;
    let mut rows = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if layout.is_none() && line.to_lowercase().contains("run:fill") {
                layout = Some(layout_or_line(line, k)?);
            }
            continue;
        }
        let l = layout.as_ref().ok_or_else(|| {
            format!(
                "line {}: data before the header line `#run:fill,ls,...` (not a brilcalc --byls CSV)",
                k + 1
            )
        })?;
        let fields: Vec<&str> = line.split(',').collect();
        let at = |why: String| format!("line {}: {why}", k + 1);
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| at(format!("{} fields, expected more", fields.len())))
        };
        let number = |i: Option<usize>, what: &str| -> Result<f64, String> {
            match i {
                None => Ok(f64::NAN),
                Some(i) => {
                    let f = field(i)?;
                    f.trim()
                        .parse::<f64>()
                        .map_err(|_| at(format!("{what} `{f}` is not a number")))
                }
            }
        };
        let run_fill = field(l.run_fill)?;
        let (run, fill) = run_fill
            .split_once(':')
            .and_then(|(r, f)| Some((r.trim().parse().ok()?, f.trim().parse().ok()?)))
            .ok_or_else(|| at(format!("`{run_fill}` is not run:fill")))?;
        let ls_field = field(l.ls)?;
        let ls = first_number(ls_field).ok_or_else(|| at(format!("`{ls_field}` is not an LS")))?;
        let text_of = |i: Option<usize>| -> Result<String, String> {
            Ok(i.map(field).transpose()?.unwrap_or("").trim().to_string())
        };
        rows.push(LumiRow {
            run,
            fill,
            ls,
            time: text_of(l.time)?,
            beam_status: text_of(l.beam_status)?,
            energy: number(l.energy, "energy")?,
            delivered: number(Some(l.delivered), "delivered")?,
            recorded: number(Some(l.recorded), "recorded")?,
            avgpu: number(l.avgpu, "avgpu")?,
            source: text_of(l.source)?,
        });
    }
    let unit = layout
        .ok_or("no header line `#run:fill,ls,...`: not a brilcalc --byls CSV")?
        .unit;
    Ok(LumiFile { unit, rows })
}

fn layout_or_line(line: &str, k: usize) -> Result<Layout, String> {
    layout(line).map_err(|e| format!("line {}: {e}", k + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byls_csv_by_hand() {
        let text = "#Data tag : 23v1 , Norm tag: None\n\
            #run:fill,ls,time,beamstatus,E(GeV),delivered(/ub),recorded(/ub),avgpu,source\n\
            355100:8102,1:1,07/05/22 14:47:11,STABLE BEAMS,6800,13.012,12.801,35.7,HFOC\n\
            355100:8102,2:2,07/05/22 14:47:34,STABLE BEAMS,6800,13.5,13.2,36.1,HFOC\n\
            #Summary:\n\
            #nfill,nrun,nls,ncms,totdelivered(/ub),totrecorded(/ub)\n\
            #1,1,2,2,26.512,26.001\n";
        let f = parse(text).unwrap();
        assert_eq!(f.unit, "/ub");
        assert_eq!(f.rows.len(), 2);
        let r = &f.rows[1];
        assert_eq!((r.run, r.fill, r.ls), (355100, 8102, 2));
        assert_eq!((r.delivered, r.recorded, r.avgpu), (13.5, 13.2, 36.1));
        assert_eq!(
            (r.beam_status.as_str(), r.source.as_str()),
            ("STABLE BEAMS", "HFOC")
        );
    }

    #[test]
    fn other_files_are_refused_naming_the_line() {
        let header =
            "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source\n";
        let e = parse("355100:8102,1:1,x\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("header"), "{e}");
        let e = parse(&format!("{header}355100,1:1,t,S,6800,1,1,30,H\n")).unwrap_err();
        assert!(e.contains("line 2") && e.contains("not run:fill"), "{e}");
        let e = parse(&format!("{header}355100:1,1:1,t,S,6800,lots,1,30,H\n")).unwrap_err();
        assert!(e.contains("delivered `lots`"), "{e}");
        let e = parse("#run:fill,ls,time\n1:1,1,t\n").unwrap_err();
        assert!(e.contains("no `delivered` column"), "{e}");
        assert!(parse("").unwrap_err().contains("not a brilcalc"));
    }
}
