//! The emulated AMI and each emulated instance's file system.
//!
//! The image is a directory laid out like what `ami/install.sh` leaves on the real AMI:
//!
//! ```text
//! <image>/opt/iras/bin/{web-tier,app-tier,listener,scaler}   the tier binaries (symlinks)
//! <image>/opt/iras/model/                                    the model pack (symlink)
//! <image>/opt/iras/lib/libonnxruntime.so                     ONNX Runtime (symlink)
//! <image>/etc/systemd/system/iras-*.service                  the units of ami/systemd/
//! <image>/etc/systemd/system/iras-*.service.d/*.conf          drop-ins (rehearsal overrides)
//! ```
//!
//! Each instance gets its own root, `<state>/instances/<id>/`, where cloud-init writes
//! (`etc/iras/…`) and the units' output goes (`journal/<unit>.log`, journald's stand-in).
//! [`InstanceRoot::resolve`] maps a path as the instance sees it to the host: `/opt/iras`
//! and `/etc/systemd` into the image, `/etc/iras` into the instance's root, anything else
//! unchanged. Environment values that are such paths are mapped the same way, so the tiers
//! read exactly the files their unit and user data name.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the units live inside the image.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// The `ami/systemd` directory of the repository.
    pub units: PathBuf,
    /// Directory holding `web-tier`, `app-tier`, `listener` and `scaler` (aws-enabled).
    pub bin_dir: PathBuf,
    /// The model pack directory.
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library.
    pub ort_lib: PathBuf,
}

/// The tier binaries an image must hold.
pub const BINARIES: [&str; 4] = ["web-tier", "app-tier", "listener", "scaler"];

/// Stages the image at `dir` (replacing what was there) and returns `dir`.
pub fn stage(source: &ImageSource, dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let opt = dir.join("opt/iras");
    for sub in ["bin", "lib"] {
        std::fs::create_dir_all(opt.join(sub))?;
    }
    let link = |target: &Path, at: &Path| -> anyhow::Result<()> {
        let target = std::path::absolute(target)?;
        anyhow::ensure!(target.exists(), "{} is missing", target.display());
        std::os::unix::fs::symlink(&target, at)
            .with_context(|| format!("linking {} -> {}", at.display(), target.display()))
    };
    for b in BINARIES {
        link(&source.bin_dir.join(b), &opt.join("bin").join(b))?;
    }
    link(&source.model_dir, &opt.join("model"))?;
    link(&source.ort_lib, &opt.join("lib/libonnxruntime.so"))?;
    let units = dir.join(UNIT_DIR);
    std::fs::create_dir_all(&units)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(&source.units)
        .with_context(|| format!("reading {}", source.units.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "service") {
            std::fs::copy(&path, units.join(path.file_name().unwrap_or_default()))?;
            copied += 1;
        }
    }
    anyhow::ensure!(
        copied > 0,
        "no .service units in {}",
        source.units.display()
    );
    Ok(dir.to_owned())
}

/// Adds a drop-in to `unit` in the image: `<unit>.d/<name>.conf` with `EnvironmentFile=` of
/// an env file beside it holding `vars`. An environment file, not `Environment=` lines,
/// because systemd lets `EnvironmentFile=` values beat `Environment=` ones, and the
/// overrides must beat `/etc/iras/iras.env`.
pub fn add_env_drop_in(
    image: &Path,
    unit: &str,
    name: &str,
    comment: &str,
    vars: &[(String, String)],
) -> anyhow::Result<()> {
    let dir = image.join(UNIT_DIR).join(format!("{unit}.d"));
    std::fs::create_dir_all(&dir)?;
    let env_name = format!("{name}.env");
    let mut env = String::new();
    for (k, v) in vars {
        env.push_str(&format!("{k}={v}\n"));
    }
    std::fs::write(dir.join(&env_name), env)?;
    std::fs::write(
        dir.join(format!("{name}.conf")),
        format!("# {comment}\n[Service]\nEnvironmentFile=/{UNIT_DIR}/{unit}.d/{env_name}\n"),
    )?;
    Ok(())
}

/// One emulated instance's file system.
#[derive(Debug, Clone)]
pub struct InstanceRoot {
    /// The instance's own directory.
    pub root: PathBuf,
    /// The image it was booted from.
    pub image: PathBuf,
}

impl InstanceRoot {
    /// Where `path`, as the instance sees it, is on the host.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .is_some()
        };
        let relative = path.trim_start_matches('/');
        if under("/opt/iras") || under("/etc/systemd") {
            self.image.join(relative)
        } else if under("/etc/iras") {
            self.root.join(relative)
        } else {
            PathBuf::from(path)
        }
    }

    /// `value` with a leading instance path mapped (an env value that names a file).
    pub fn map_value(&self, value: &str) -> String {
        if value.starts_with('/') {
            self.resolve(value).display().to_string()
        } else {
            value.to_owned()
        }
    }

    /// Whether cloud-init may write `path` here: only the files iras itself configures.
    pub fn writable(path: &str) -> bool {
        path.starts_with("/etc/iras/") && !path.contains("/../") && !path.ends_with("/..")
    }

    /// The log file of `unit` (journald's stand-in).
    pub fn journal(&self, unit: &str) -> PathBuf {
        self.root.join("journal").join(format!("{unit}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_paths_map_into_the_image_or_the_instance() {
        let r = InstanceRoot {
            root: "/s/instances/i-1".into(),
            image: "/s/image".into(),
        };
        assert_eq!(
            r.resolve("/opt/iras/bin/app-tier"),
            Path::new("/s/image/opt/iras/bin/app-tier")
        );
        assert_eq!(
            r.resolve("/etc/iras/iras.env"),
            Path::new("/s/instances/i-1/etc/iras/iras.env")
        );
        assert_eq!(
            r.resolve("/etc/systemd/system/x.service.d/a.env"),
            Path::new("/s/image/etc/systemd/system/x.service.d/a.env")
        );
        assert_eq!(r.resolve("/etc/irasx"), Path::new("/etc/irasx"));
        assert_eq!(r.resolve("/usr/bin/env"), Path::new("/usr/bin/env"));
        assert_eq!(r.map_value("warn,iras=info"), "warn,iras=info");
        assert!(InstanceRoot::writable("/etc/iras/iras.env"));
        assert!(!InstanceRoot::writable("/etc/passwd"));
        assert!(!InstanceRoot::writable("/etc/iras/../passwd"));
    }
}
