//! ME name patterns, as the DQM readers select monitoring elements: `*`
//! within a folder, `**` across folders, `?` one character; an ME is
//! selected when any pattern matches its name.

/// Compiled ME name patterns.
#[derive(Debug, Clone)]
pub struct MePatterns(Vec<glob::Pattern>);

impl MePatterns {
    /// Compiles `patterns`; an error (a sentence) for none or a bad one.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("give at least one ME pattern (`**`: all)".into());
        }
        patterns
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("`{p}`: {e}")))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, me: &str) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        self.0.iter().any(|p| p.matches_with(me, options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_star_stays_in_a_folder_two_cross_them() {
        let p = |v: &[&str]| MePatterns::new(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let depth = p(&["Hcal/DigiTask/Occupancy/depth/*"]).unwrap();
        assert!(depth.matches("Hcal/DigiTask/Occupancy/depth/depth1"));
        assert!(!depth.matches("Hcal/DigiTask/Occupancy/depth/a/b"));
        let all = p(&["Ecal/*", "Hcal/**"]).unwrap();
        assert!(all.matches("Hcal/DigiTask/Occupancy/depth/a/b") && all.matches("Ecal/x"));
        assert!(!all.matches("JetMET/MET"));
        assert!(p(&[]).unwrap_err().contains("at least one"));
        assert!(p(&["a/[b"]).unwrap_err().contains("`a/[b`"));
    }
}
