//! The finished runs of a state directory: every `report.json` under `<state dir>/reports/*/`,
//! summarised for the list, and read whole for the report page.
//!
//! A run is named by its report directory's name (its `key`), not by the run id inside the
//! report: the key is what exists on disk, so it can be checked against the directory listing and
//! can never name a path outside `reports/`.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where the reports of a state directory are.
pub fn reports_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("reports")
}

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("failed to list the reports in {path}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no report named {key:?}")]
    NotFound { key: String },
    #[error("failed to read the report {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the report {path} is not JSON")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One line of the run list.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The report directory's name: `/runs/<key>` shows it.
    pub key: String,
    pub run_id: Option<String>,
    pub experiment: Option<String>,
    pub verdict: Option<String>,
    pub reason: Option<String>,
    pub started_at_unix_ms: Option<u64>,
    pub duration_seconds: Option<f64>,
    pub faults: usize,
    pub targets: usize,
    pub all_recovered: Option<bool>,
    pub errors: usize,
}

impl RunSummary {
    fn from_report(key: String, v: &serde_json::Value) -> RunSummary {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let faults = v.get("faults").and_then(|f| f.as_array());
        RunSummary {
            key,
            run_id: s("runId"),
            experiment: s("experiment"),
            verdict: s("verdict"),
            reason: s("reason"),
            started_at_unix_ms: v.get("startedAtUnixMs").and_then(|x| x.as_u64()),
            duration_seconds: v.get("durationSeconds").and_then(|x| x.as_f64()),
            faults: faults.map_or(0, |f| f.len()),
            targets: faults.map_or(0, |f| {
                f.iter()
                    .filter_map(|f| f.get("targets").and_then(|t| t.as_array()))
                    .map(|t| t.len())
                    .sum()
            }),
            all_recovered: v.get("allRecovered").and_then(|x| x.as_bool()),
            errors: v
                .get("errors")
                .and_then(|x| x.as_array())
                .map_or(0, |e| e.len()),
        }
    }
}

/// A report directory name we accept: what `havoc run` and the dashboard create (run ids,
/// `dash-…`), never `.`, `..` or anything with a separator.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Every run with a readable `report.json`, newest first. Directories without a report yet (a
/// run in progress) are left out; reports that cannot be read or parsed are listed in the second
/// value with the reason, so a broken file is visible rather than silently missing.
pub fn list(state_dir: &Path) -> Result<(Vec<RunSummary>, Vec<String>), RunsError> {
    let dir = reports_dir(state_dir);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(source) => return Err(RunsError::List { path: dir, source }),
    };
    let mut runs = Vec::new();
    let mut broken = Vec::new();
    for ent in rd.flatten() {
        let Some(key) = ent.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !valid_key(&key) {
            continue;
        }
        match read(state_dir, &key) {
            Ok(v) => runs.push(RunSummary::from_report(key, &v)),
            Err(RunsError::NotFound { .. }) => {}
            Err(e) => broken.push(error_chain(&e)),
        }
    }
    runs.sort_by(|a, b| {
        b.started_at_unix_ms
            .cmp(&a.started_at_unix_ms)
            .then_with(|| a.key.cmp(&b.key))
    });
    broken.sort();
    Ok((runs, broken))
}

/// The report of one run, as JSON.
pub fn read(state_dir: &Path, key: &str) -> Result<serde_json::Value, RunsError> {
    if !valid_key(key) {
        return Err(RunsError::NotFound { key: key.into() });
    }
    let path = reports_dir(state_dir).join(key).join("report.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RunsError::NotFound { key: key.into() })
        }
        Err(source) => return Err(RunsError::Read { path, source }),
    };
    serde_json::from_slice(&bytes).map_err(|source| RunsError::Parse { path, source })
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    havoc_engine::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_reports_directory() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\0b", "a b"] {
            assert!(!valid_key(bad), "{bad:?} accepted");
        }
        for good in ["20261130-232512-4242", "dash-1a2b", "run_1.2"] {
            assert!(valid_key(good), "{good:?} refused");
        }
    }

    #[test]
    fn list_skips_directories_without_a_report_and_names_broken_ones() {
        let state = tempfile::tempdir().expect("tempdir");
        let reports = reports_dir(state.path());
        std::fs::create_dir_all(reports.join("running")).expect("mkdir");
        std::fs::create_dir_all(reports.join("broken")).expect("mkdir");
        std::fs::write(reports.join("broken/report.json"), "{").expect("write");
        std::fs::create_dir_all(reports.join("ok")).expect("mkdir");
        std::fs::write(
            reports.join("ok/report.json"),
            r#"{"runId":"r1","experiment":"e","verdict":"completed","startedAtUnixMs":5,
               "faults":[{"targets":[{},{}]},{"targets":[{}]}],"errors":[],"allRecovered":true}"#,
        )
        .expect("write");
        let (runs, broken) = list(state.path()).expect("list");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].key, "ok");
        assert_eq!(runs[0].verdict.as_deref(), Some("completed"));
        assert_eq!((runs[0].faults, runs[0].targets), (2, 3));
        assert_eq!(broken.len(), 1);
        assert!(broken[0].contains("broken/report.json"), "{broken:?}");
    }
}
