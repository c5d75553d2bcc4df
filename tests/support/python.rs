//! The independent RFC 9421 implementation the interop tests run against: the PyPI package
//! `http-message-signatures`, driven through tests/interop/. Found on the machine's python3, or
//! installed (pinned, tests/interop/requirements.txt) into the target directory. A missing
//! python3 or pip fails the test with what to install: an interop test that skips proves
//! nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The tests/interop directory.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A `python3` command that can import `http_message_signatures` and the harness.
pub fn python() -> Command {
    static PYTHONPATH: OnceLock<String> = OnceLock::new();
    let path = PYTHONPATH.get_or_init(|| {
        let interop = interop_dir();
        let has_package = |pythonpath: &str| {
            Command::new("python3")
                .args(["-c", "import http_message_signatures"])
                .env("PYTHONPATH", pythonpath)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let base = interop.display().to_string();
        if has_package(&base) {
            return base;
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pydeps");
        let with_target = format!("{base}:{}", target.display());
        if has_package(&with_target) {
            return with_target;
        }
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&target)
            .arg("-r")
            .arg(interop.join("requirements.txt"))
            .status();
        assert!(
            matches!(installed, Ok(s) if s.success()) && has_package(&with_target),
            "the interop tests need python3 with pip, to install the PyPI package \
             http-message-signatures (pinned in tests/interop/requirements.txt); \
             install python3 and python3-pip, or run: python3 -m pip install -r tests/interop/requirements.txt"
        );
        with_target
    });
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", path);
    cmd
}
