//! The independent RFC 9421 implementation the interop tests run against: the PyPI package
//! `http-message-signatures`, driven through tests/interop/. Used by this crate's tests and by
//! the engine crate's (crates/peergate-signature/tests/interop_python.rs, by path).
//!
//! The interpreter is `PEERGATE_PYTHON` or `python3`. When it cannot import the packages, they
//! are installed (pinned, tests/interop/requirements.txt) with pip into the target directory.
//! A missing interpreter or pip fails the test with what to install: an interop test that
//! skips proves nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const IMPORTS: &str = "import http_message_signatures, http_sf, cryptography";

/// tests/interop of the repository, found from whichever crate includes this file.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("tests/interop"))
        .find(|dir| dir.join("httpsig_interop.py").is_file())
        .expect("tests/interop/httpsig_interop.py above the crate directory")
}

fn requirements() -> PathBuf {
    interop_dir().join("requirements.txt")
}

fn install_hint() -> String {
    format!(
        "install Python 3.10+ with pip (e.g. `apt-get install python3 python3-pip`), then \
         `python3 -m pip install -r {}`; or set PEERGATE_PYTHON to an interpreter that has them",
        requirements().display()
    )
}

/// The interpreter, and the `PYTHONPATH` entry when the packages were installed here.
struct Python {
    exe: String,
    pythonpath: Option<PathBuf>,
}

fn imports_ok(exe: &str, pythonpath: Option<&Path>) -> bool {
    let mut cmd = Command::new(exe);
    cmd.args(["-c", IMPORTS])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", joined_pythonpath(p));
    }
    cmd.status().is_ok_and(|s| s.success())
}

fn joined_pythonpath(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).expect("PYTHONPATH entries")
}

fn find_python() -> Result<Python, String> {
    let exe = std::env::var("PEERGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let version = Command::new(&exe).arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "the interop tests need `{exe}`, which did not run ({}); {}",
            match version {
                Ok(o) => format!("exit status {}", o.status),
                Err(e) => e.to_string(),
            },
            install_hint()
        ));
    }
    if imports_ok(&exe, None) {
        return Ok(Python {
            exe,
            pythonpath: None,
        });
    }
    let pydeps = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pydeps");
    if imports_ok(&exe, Some(&pydeps)) {
        return Ok(Python {
            exe,
            pythonpath: Some(pydeps),
        });
    }
    let pip = Command::new(&exe).args(["-m", "pip", "--version"]).output();
    if !pip.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "`{exe}` cannot `{IMPORTS}` and has no pip to install them; {}",
            install_hint()
        ));
    }
    eprintln!(
        "interop: installing {} into {}",
        requirements().display(),
        pydeps.display()
    );
    let out = Command::new(&exe)
        .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
        .arg(&pydeps)
        .arg("-r")
        .arg(requirements())
        .output()
        .map_err(|e| format!("running pip failed: {e}; {}", install_hint()))?;
    if !out.status.success() {
        return Err(format!(
            "`{exe} -m pip install --target {} -r {}` failed ({}):\n{}\n{}",
            pydeps.display(),
            requirements().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            install_hint()
        ));
    }
    if !imports_ok(&exe, Some(&pydeps)) {
        return Err(format!(
            "pip installed the packages into {} but `{IMPORTS}` still fails; {}",
            pydeps.display(),
            install_hint()
        ));
    }
    Ok(Python {
        exe,
        pythonpath: Some(pydeps),
    })
}

/// A command running the Python that has `http-message-signatures`; panics with what to
/// install when there is none.
pub fn python() -> Command {
    static PYTHON: OnceLock<Result<Python, String>> = OnceLock::new();
    let py = match PYTHON.get_or_init(find_python) {
        Ok(p) => p,
        Err(why) => panic!("RFC 9421 interop with Python is not possible: {why}"),
    };
    let mut cmd = Command::new(&py.exe);
    if let Some(p) = &py.pythonpath {
        cmd.env("PYTHONPATH", joined_pythonpath(p));
    }
    cmd
}
