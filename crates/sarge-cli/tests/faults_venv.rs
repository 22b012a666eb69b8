//! Faults around the shared virtualenv: one changed after it was built
//! while an instance runs from it, and requirements files that would make
//! the installer read outside the app or the wheel folder.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The hello app, answering with the virtualenv it runs from (its
/// `sys.prefix`) after reading flask's source from disk, as a lazy import
/// or a restart would: a request fails while that venv is half there.
fn prefix_app(name: &str) -> PathBuf {
    app_with(
        name,
        &[(
            "app.py",
            "import os, sys\nimport flask\n\napp = flask.Flask(__name__)\n\n\
             @app.route('/')\ndef home():\n    with open(flask.__file__) as source:\n        source.read()\n    return sys.prefix + '\\n'\n\n\
             @app.route('/up')\ndef up():\n    return 'ok\\n'\n\n\
             if __name__ == '__main__':\n    app.run(host='127.0.0.1', port=int(os.environ['PORT']), threaded=True)\n",
        )],
    )
}

fn served_prefix(home: &TestHome) -> PathBuf {
    let (status, body) = http_get(home.stable, "/").unwrap();
    assert_eq!(status, 200, "{body}");
    PathBuf::from(body.trim())
}

fn site_packages(venv: &Path) -> PathBuf {
    let python = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    python.path().join("site-packages")
}

/// Tampered as root (which ignores the read-only bits): the fingerprint
/// check sees it, and the replacement is built beside it while the old
/// instance keeps serving from the tampered one until the switch.
#[test]
fn a_tampered_venv_is_replaced_beside_the_one_the_running_instance_uses() {
    let home = TestHome::new("venvtamper", "  MESSAGE: tamper");
    let app = prefix_app("venvtamper");
    home.deploy_ok(&app, "web");
    let old_venv = served_prefix(&home);
    assert!(
        old_venv.starts_with(home.root.join("var/venvs")),
        "{old_venv:?}"
    );
    let key = old_venv.file_name().unwrap().to_str().unwrap().to_owned();
    let site = site_packages(&old_venv);
    let python = site.parent().unwrap().file_name().unwrap().to_owned();
    let python = python.to_str().unwrap();
    std::fs::write(site.join("tampered.pth"), "# written after the build\n").unwrap();

    let load = Load::start(home.stable);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let output = home.deploy_ok(&app, "web");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (fresh, kept_alive) = load.finish();
    let counts = fresh.merge(kept_alive);

    assert_eq!(
        counts.failed,
        0,
        "requests failed during the rebuild, the first: {:?}\n{output}",
        counts.failures.first()
    );
    let expected = format!(
        "virtualenv {key} changed since it was built (files in it changed after it was built: \
         lib/{python}/site-packages/tampered.pth, lib/{python}/site-packages): built a fresh one"
    );
    assert!(output.contains(&expected), "{output}");
    let new_venv = served_prefix(&home);
    assert_eq!(
        new_venv,
        home.root.join(format!("var/venvs/{key}-1")),
        "{output}"
    );
    // The old instance answered from the tampered venv until the switch,
    // the new one from the fresh venv after it, and nothing in between.
    let old_text = format!("{}\n", old_venv.display());
    let new_text = format!("{}\n", new_venv.display());
    for body in &counts.bodies {
        assert!(*body == old_text || *body == new_text, "{body:?}");
    }
    assert!(counts.bodies.contains(&old_text), "{:?}", counts.bodies);
    assert_eq!(counts.bodies.last(), Some(&new_text), "{:?}", counts.bodies);
    // No instance uses the tampered one any more: collected.
    assert!(!old_venv.exists(), "{old_venv:?} was not removed");

    // The fresh one is sealed like any other: reused as it is.
    let again = home.deploy_ok(&app, "web");
    assert!(
        again.contains(&format!("reused {}", new_venv.display())),
        "{again}"
    );
    let _ = std::fs::remove_dir_all(&app);
}

/// `-r /etc/passwd` made uv read the file and echo a line of it.
#[test]
fn a_requirements_line_reading_outside_the_app_is_refused_unread() {
    let home = TestHome::new("venvreqs", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    let app = app_with(
        "venvreqs",
        &[("requirements.txt", "-r /etc/passwd\nFlask\n")],
    );
    let output = home.deploy(&app, "web");
    let message = stderr(&output);
    assert!(!message.contains("root:"), "{message}");
    assert_refused(
        &home,
        &before,
        Refusal {
            case: "-r /etc/passwd",
            output,
            expected: "requirements.txt line 1, `-r /etc/passwd`: including a file by absolute path is refused",
        },
    );
    let _ = std::fs::remove_dir_all(&app);
}

/// The .pyc files of Flask's package in `venv`, by name, with their bytes.
fn flask_pycs(venv: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(site_packages(venv).join("flask/__pycache__"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// A new environment whose packages an earlier one has takes that one's
/// compiled files: hash-based, so valid for the same source anywhere.
#[test]
fn a_new_environment_reuses_the_bytecode_of_unchanged_packages() {
    let home = TestHome::new("pycreuse", "  MESSAGE: pyc");
    let app = prefix_app("pycreuse");
    home.deploy_ok(&app, "web");
    let first = served_prefix(&home);
    let before = flask_pycs(&first);
    assert!(before.len() > 5, "{before:?}");
    for (name, bytes) in &before {
        // PEP 552: flags word 1 = hash-based, unchecked.
        assert_eq!(&bytes[4..8], &[1, 0, 0, 0], "{name} is not hash-based");
    }
    // Another key (a comment in requirements.txt), the same packages.
    let requirements = std::fs::read_to_string(app.join("requirements.txt")).unwrap();
    std::fs::write(
        app.join("requirements.txt"),
        format!("{requirements}# a comment makes a new environment\n"),
    )
    .unwrap();
    let output = home.deploy_ok(&app, "web");
    let second = served_prefix(&home);
    assert_ne!(first, second, "{output}");
    assert_eq!(flask_pycs(&second), before, "the compiled files differ");
    // Nothing compiled: every package was in the first environment.
    assert!(
        output.contains(" (0 files compiled, ")
            && output.contains(" taken from earlier environments)"),
        "{output}"
    );
    let first_build = home.releases();
    assert_eq!(first_build.len(), 2);
    let _ = std::fs::remove_dir_all(&app);
}
