//! The part of cloud-init's `#cloud-config` user data the emulator performs: `write_files`
//! (path, content, permissions) and `runcmd` entries of the form `systemctl enable --now
//! UNIT…` (or `systemctl start UNIT…`), which is all the iras user data uses.
//!
//! Anything else in the user data is refused, not skipped: the emulator exists to show
//! that what the scaler and the template really pass boots an instance, so a directive it
//! cannot perform must fail the boot loudly rather than boot something different from what
//! EC2 would.

use serde::Deserialize;
use thiserror::Error;

/// User data the emulator cannot perform.
#[derive(Debug, Error)]
pub enum CloudConfigError {
    /// Not `#cloud-config` (a shell script, a MIME multipart, …).
    #[error("user data is not #cloud-config (it starts with {0:?})")]
    NotCloudConfig(String),
    /// Not valid YAML, or a field of the wrong type.
    #[error("user data is not valid cloud-config YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A top-level key the emulator does not perform.
    #[error("cloud-config key {0:?} is not emulated")]
    UnsupportedKey(String),
    /// A `runcmd` entry that is not a `systemctl enable --now` / `start`.
    #[error("runcmd entry {0:?} is not emulated (only `systemctl enable --now UNIT…`)")]
    UnsupportedCommand(String),
    /// A `write_files` entry the emulator refuses (encoding, append, …).
    #[error("write_files entry for {path}: {message}")]
    UnsupportedFile {
        /// The file's path.
        path: String,
        /// What is not emulated.
        message: String,
    },
}

/// One `write_files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute path on the instance.
    pub path: String,
    /// The file's content.
    pub content: String,
    /// Octal mode, e.g. `0o644`.
    pub mode: u32,
}

/// What booting with this user data does: files to write, then units to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// Files, in order.
    pub write_files: Vec<WriteFile>,
    /// Units `runcmd` enables and starts, in order.
    pub units: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    append: Option<bool>,
    #[serde(default)]
    defer: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Words(Vec<String>),
    Line(String),
}

/// The top-level keys the emulator reads; any other key is an error.
const KEYS: &[&str] = &["write_files", "runcmd"];

impl CloudConfig {
    /// Parses user data as cloud-init would see it (after EC2's base64 is removed).
    pub fn parse(user_data: &str) -> Result<Self, CloudConfigError> {
        let first = user_data.lines().next().unwrap_or("").trim_end();
        if first != "#cloud-config" {
            return Err(CloudConfigError::NotCloudConfig(
                first.chars().take(40).collect(),
            ));
        }
        let doc: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(user_data)?;
        for key in doc.keys() {
            let key = key.as_str().unwrap_or_default();
            if !KEYS.contains(&key) {
                return Err(CloudConfigError::UnsupportedKey(key.to_owned()));
            }
        }
        let files: Vec<RawFile> = match doc.get("write_files") {
            Some(v) => serde_yaml_ng::from_value(v.clone())?,
            None => Vec::new(),
        };
        let commands: Vec<RawCommand> = match doc.get("runcmd") {
            Some(v) => serde_yaml_ng::from_value(v.clone())?,
            None => Vec::new(),
        };
        let write_files = files
            .into_iter()
            .map(|f| {
                let refuse = |message: &str| CloudConfigError::UnsupportedFile {
                    path: f.path.clone(),
                    message: message.to_owned(),
                };
                if f.encoding.as_deref().is_some_and(|e| e != "text/plain") {
                    return Err(refuse("encodings other than text are not emulated"));
                }
                if f.append == Some(true) || f.defer == Some(true) {
                    return Err(refuse("append and defer are not emulated"));
                }
                if !f.path.starts_with('/') {
                    return Err(refuse("the path must be absolute"));
                }
                let _owner = f.owner;
                let mode = match f.permissions.as_deref() {
                    Some(p) => u32::from_str_radix(p.trim_start_matches("0o"), 8)
                        .map_err(|_| refuse("permissions must be octal"))?,
                    None => 0o644,
                };
                Ok(WriteFile {
                    path: f.path,
                    content: f.content,
                    mode,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut units = Vec::new();
        for command in commands {
            let words = match command {
                RawCommand::Words(w) => w,
                RawCommand::Line(l) => l.split_whitespace().map(str::to_owned).collect(),
            };
            let joined = words.join(" ");
            let started: Vec<&String> = match words.as_slice() {
                [systemctl, enable, now, rest @ ..]
                    if systemctl == "systemctl" && enable == "enable" && now == "--now" =>
                {
                    rest.iter().collect()
                }
                [systemctl, start, rest @ ..] if systemctl == "systemctl" && start == "start" => {
                    rest.iter().collect()
                }
                _ => return Err(CloudConfigError::UnsupportedCommand(joined)),
            };
            if started.is_empty() || started.iter().any(|u| u.starts_with('-')) {
                return Err(CloudConfigError::UnsupportedCommand(joined));
            }
            units.extend(started.into_iter().cloned());
        }
        Ok(Self { write_files, units })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_app_tier_user_data_writes_its_env_and_starts_the_worker() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../ami/user-data/app-tier.yaml"),
        )
        .unwrap();
        let config = CloudConfig::parse(&text).unwrap();
        assert_eq!(config.units, ["iras-app-tier.service"]);
        assert_eq!(config.write_files.len(), 1);
        let env = &config.write_files[0];
        assert_eq!(env.path, "/etc/iras/iras.env");
        assert_eq!(env.mode, 0o600, "root only: it may hold the listener token");
        assert!(env.content.contains("IRAS_BACKEND=aws\n"));
    }

    #[test]
    fn what_is_not_emulated_is_refused() {
        assert!(matches!(
            CloudConfig::parse("#!/bin/sh\necho hi\n"),
            Err(CloudConfigError::NotCloudConfig(_))
        ));
        assert!(matches!(
            CloudConfig::parse("#cloud-config\npackages: [nginx]\n"),
            Err(CloudConfigError::UnsupportedKey(k)) if k == "packages"
        ));
        assert!(matches!(
            CloudConfig::parse("#cloud-config\nruncmd:\n  - [curl, http://x]\n"),
            Err(CloudConfigError::UnsupportedCommand(_))
        ));
        assert!(matches!(
            CloudConfig::parse(
                "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: b64\n    content: eA==\n"
            ),
            Err(CloudConfigError::UnsupportedFile { .. })
        ));
        let ok = CloudConfig::parse(
            "#cloud-config\nruncmd:\n  - systemctl enable --now a.service b.service\n",
        )
        .unwrap();
        assert_eq!(ok.units, ["a.service", "b.service"]);
    }
}
