//! The part of a systemd service unit the emulator acts on, read from the unit files the AMI
//! installs (`ami/systemd/*.service`) and their drop-ins (`<unit>.d/*.conf`).
//!
//! What is read: `ConditionPathExists=`, `EnvironmentFile=`, `Environment=`, `ExecStart=`,
//! `Restart=`, `RestartSec=`, `KillSignal=` and `TimeoutStopSec=`. Sandboxing, users and
//! ordering are systemd's business and are checked by `systemd-analyze` in
//! `scripts/check-deploy`; the emulator runs the process as the current user.
//!
//! Parsing follows systemd's rules where they matter here: later assignments win, an
//! empty assignment resets a list (`Environment=`), drop-ins apply in file-name order,
//! assignments are space-separated and may be double-quoted, and a leading `-` on
//! `EnvironmentFile=` makes the file optional.

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// A unit file that cannot be used.
#[derive(Debug, Error)]
pub enum UnitError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The unit or drop-in file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line the emulator does not understand.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The unit or drop-in file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The unit has no `ExecStart=`.
    #[error("{0} has no ExecStart=")]
    NoExecStart(String),
}

/// When systemd restarts the service after its process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Never.
    No,
    /// After an unclean exit: a non-zero status or a signal.
    OnFailure,
    /// Whenever it ends.
    Always,
}

/// An environment file reference (`EnvironmentFile=[-]PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    /// The path as the unit gives it (on the instance's file system).
    pub path: PathBuf,
    /// `-` prefix: a missing file is not an error.
    pub optional: bool,
}

/// What the emulator needs of one service unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    /// The unit's file name, e.g. `iras-app-tier.service`.
    pub name: String,
    /// `ConditionPathExists=`: the unit is skipped unless these exist.
    pub condition_paths: Vec<PathBuf>,
    /// Environment files, in order.
    pub env_files: Vec<EnvFile>,
    /// `Environment=` assignments, in order (later ones win).
    pub environment: Vec<(String, String)>,
    /// The program and its arguments.
    pub exec_start: Vec<String>,
    /// Restart policy.
    pub restart: Restart,
    /// Pause before a restart.
    pub restart_sec: Duration,
    /// Signal that asks the service to stop.
    pub kill_signal: nix::sys::signal::Signal,
    /// How long a stop may take before SIGKILL.
    pub timeout_stop: Duration,
}

/// systemd's defaults for what a unit leaves out.
const DEFAULT_RESTART_SEC: Duration = Duration::from_millis(100);
const DEFAULT_TIMEOUT_STOP: Duration = Duration::from_secs(90);

impl ServiceUnit {
    /// Loads `dir/name` and its drop-ins `dir/name.d/*.conf` (in file-name order).
    pub fn load(dir: &Path, name: &str) -> Result<Self, UnitError> {
        let mut unit = Self {
            name: name.to_owned(),
            condition_paths: Vec::new(),
            env_files: Vec::new(),
            environment: Vec::new(),
            exec_start: Vec::new(),
            restart: Restart::No,
            restart_sec: DEFAULT_RESTART_SEC,
            kill_signal: nix::sys::signal::Signal::SIGTERM,
            timeout_stop: DEFAULT_TIMEOUT_STOP,
        };
        let main = dir.join(name);
        unit.apply(&main, &read(&main)?)?;
        let drop_in_dir = dir.join(format!("{name}.d"));
        let mut drop_ins: Vec<PathBuf> = match std::fs::read_dir(&drop_in_dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect(),
            Err(_) => Vec::new(),
        };
        drop_ins.sort();
        for path in drop_ins {
            unit.apply(&path, &read(&path)?)?;
        }
        if unit.exec_start.is_empty() {
            return Err(UnitError::NoExecStart(name.to_owned()));
        }
        Ok(unit)
    }

    /// Applies the assignments of one file (the unit or a drop-in) on top of what is there.
    fn apply(&mut self, path: &Path, text: &str) -> Result<(), UnitError> {
        let mut section = String::new();
        for (index, raw) in text.lines().enumerate() {
            let syntax = |message: String| UnitError::Syntax {
                path: path.to_owned(),
                line: index + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                name.clone_into(&mut section);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(syntax(format!("expected KEY=VALUE, got {line:?}")));
            };
            let (key, value) = (key.trim(), value.trim());
            match (section.as_str(), key) {
                ("Unit", "ConditionPathExists") => {
                    self.condition_paths.push(PathBuf::from(value));
                }
                ("Service", "EnvironmentFile") if value.is_empty() => self.env_files.clear(),
                ("Service", "EnvironmentFile") => {
                    let (optional, path) = match value.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, value),
                    };
                    self.env_files.push(EnvFile {
                        path: PathBuf::from(path),
                        optional,
                    });
                }
                ("Service", "Environment") if value.is_empty() => self.environment.clear(),
                ("Service", "Environment") => {
                    for word in split_words(value).map_err(syntax)? {
                        let Some((k, v)) = word.split_once('=') else {
                            return Err(syntax(format!("Environment= word {word:?} has no '='")));
                        };
                        self.environment.push((k.to_owned(), v.to_owned()));
                    }
                }
                ("Service", "ExecStart") => {
                    // An empty ExecStart= in a drop-in resets it (the usual override idiom).
                    let words = split_words(value).map_err(syntax)?;
                    self.exec_start = words;
                    if let Some(first) = self.exec_start.first_mut()
                        && let Some(stripped) = first.strip_prefix('-')
                    {
                        *first = stripped.to_owned();
                    }
                }
                ("Service", "Restart") => {
                    self.restart = match value {
                        "no" => Restart::No,
                        "on-failure" => Restart::OnFailure,
                        "always" => Restart::Always,
                        other => return Err(syntax(format!("Restart={other} is not emulated"))),
                    };
                }
                ("Service", "RestartSec") => {
                    self.restart_sec = parse_span(value).map_err(syntax)?
                }
                ("Service", "TimeoutStopSec") => {
                    self.timeout_stop = parse_span(value).map_err(syntax)?;
                }
                ("Service", "KillSignal") => {
                    self.kill_signal = value
                        .parse()
                        .map_err(|_| syntax(format!("unknown signal {value:?}")))?;
                }
                // Everything else (sandboxing, users, ordering, install) is systemd's.
                _ => {}
            }
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, UnitError> {
    std::fs::read_to_string(path).map_err(|source| UnitError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A systemd time span: `90s`, `5min`, `1min 30s`, `500ms`, or a bare number of seconds.
pub fn parse_span(value: &str) -> Result<Duration, String> {
    if let Ok(secs) = value.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(value).map_err(|e| format!("bad time span {value:?}: {e}"))
}

/// Splits a value into words on spaces, honouring double and single quotes (systemd's
/// quoting for `Environment=` and `ExecStart=`).
fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in {value:?}"));
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// Parses an environment file as systemd reads one: `KEY=VALUE` lines, `#` and `;`
/// comments, optional surrounding quotes on the value.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_app_tier_unit_of_the_ami_is_understood() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ami/systemd");
        let unit = ServiceUnit::load(&dir, "iras-app-tier.service").unwrap();
        assert_eq!(unit.exec_start, ["/opt/iras/bin/app-tier", "serve"]);
        assert_eq!(
            unit.env_files,
            [EnvFile {
                path: "/etc/iras/iras.env".into(),
                optional: false
            }]
        );
        assert!(unit.environment.contains(&(
            iras_protocol::env::IRAS_MODEL_DIR.into(),
            "/opt/iras/model".into()
        )));
        assert!(
            unit.environment
                .contains(&("RUST_LOG".into(), "warn,iras_app_tier=info".into()))
        );
        assert_eq!(unit.restart, Restart::OnFailure);
        assert_eq!(unit.restart_sec, Duration::from_secs(5));
        assert_eq!(unit.timeout_stop, Duration::from_secs(150));
        assert_eq!(unit.kill_signal, nix::sys::signal::Signal::SIGTERM);
        assert_eq!(unit.condition_paths, [PathBuf::from("/etc/iras/iras.env")]);
    }

    #[test]
    fn drop_ins_apply_in_order_and_can_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.service"),
            "[Service]\nEnvironment=A=1 \"B=two words\"\nExecStart=/bin/x --a\nTimeoutStopSec=1min 30s\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("x.service.d")).unwrap();
        std::fs::write(
            dir.path().join("x.service.d/20-b.conf"),
            "[Service]\nEnvironment=A=3\nExecStart=\nExecStart=/bin/y\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("x.service.d/10-a.conf"),
            "[Service]\nEnvironment=\nEnvironment=C=2\nRestart=always\n",
        )
        .unwrap();
        let unit = ServiceUnit::load(dir.path(), "x.service").unwrap();
        assert_eq!(
            unit.environment,
            [("C".into(), "2".into()), ("A".into(), "3".into())]
        );
        assert_eq!(unit.exec_start, ["/bin/y"]);
        assert_eq!(unit.restart, Restart::Always);
        assert_eq!(unit.timeout_stop, Duration::from_secs(90));
    }

    #[test]
    fn unknown_restart_modes_and_missing_exec_start_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.service"),
            "[Service]\nExecStart=/a\nRestart=on-abnormal\n",
        )
        .unwrap();
        assert!(ServiceUnit::load(dir.path(), "a.service").is_err());
        std::fs::write(dir.path().join("b.service"), "[Service]\nUser=x\n").unwrap();
        assert!(matches!(
            ServiceUnit::load(dir.path(), "b.service"),
            Err(UnitError::NoExecStart(_))
        ));
    }

    #[test]
    fn env_files_read_like_systemd() {
        let env = parse_env_file("# c\nA=1\n\n B = \"x y\" \n;d\nC='z'\nnot an assignment\n");
        assert_eq!(
            env,
            [
                ("A".into(), "1".into()),
                ("B".into(), "x y".into()),
                ("C".into(), "z".into())
            ]
        );
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_span("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_span("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_span("soon").is_err());
    }
}
