//! Builds real environments with the real uv and pip from hand-made wheels,
//! never touching the network.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use camino::{Utf8Path, Utf8PathBuf};
use sarge_venv::{EnvironmentSpec, Error, Installer, Progress, VenvId, VenvStore};

/// Builds pure-Python wheels with the stdlib zipfile module:
/// `WHEEL_SCRIPT DIST NAME VERSION [REQUIRES...]`.
const WHEEL_SCRIPT: &str = r#"
import base64, hashlib, sys, zipfile
dist, name, version, *requires = sys.argv[1:]
module = name.replace("-", "_")
info = f"{module}-{version}.dist-info"
entries = {
    f"{module}/__init__.py": f"NAME = {name!r}\n" + "".join(f"import {r.replace('-', '_')}\n" for r in requires),
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: sarge-venv-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for path, text in entries.items():
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{path},sha256={digest},{len(data)}\n"
entries[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
with zipfile.ZipFile(f"{dist}/{module}-{version}-py3-none-any.whl", "w") as wheel:
    for path, text in entries.items():
        wheel.writestr(path, text)
"#;

struct TestDir(Utf8PathBuf);

impl TestDir {
    fn new(label: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sarge-venv-live-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let path = Utf8PathBuf::try_from(std::env::temp_dir().join(name)).unwrap();
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Built environments are read-only.
        let _ = sarge_venv::remove_tree(&self.0);
    }
}

fn required_tool(name: &str) -> Utf8PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .map(|found| Utf8PathBuf::try_from(found).unwrap())
        .unwrap_or_else(|| panic!("{name} not found on PATH; run scripts/test, which installs it"))
}

fn uv() -> Installer {
    Installer::Uv {
        bin: required_tool("uv"),
    }
}

fn build_wheel(dist: &Utf8Path, name: &str, requires: &[&str]) {
    let status = Command::new(required_tool("python3"))
        .args(["-c", WHEEL_SCRIPT])
        .arg(dist)
        .args([name, "1.0"])
        .args(requires)
        .status()
        .unwrap();
    assert!(status.success(), "building wheel {name}");
}

/// A wheel folder with demo-pkg (which requires demo-dep) and demo-dep, a
/// store, and requirements files.
struct Fixture {
    dir: TestDir,
}

impl Fixture {
    fn new(label: &str) -> Fixture {
        let dir = TestDir::new(label);
        let dist = dir.0.join("dist");
        std::fs::create_dir(&dist).unwrap();
        build_wheel(&dist, "demo-dep", &[]);
        build_wheel(&dist, "demo-pkg", &["demo-dep"]);
        std::fs::write(dir.0.join("requirements.txt"), "demo-pkg\n").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> Utf8PathBuf {
        self.dir.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> Utf8PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn store(&self, installer: Installer) -> VenvStore {
        VenvStore::new(self.path("store"), self.path("cache"), installer)
    }

    /// Names in the store folder other than its lock folder.
    fn store_entries(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path("store")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "venv-locks")
            .collect();
        names.sort();
        names
    }
}

fn spec<'a>(
    python: &'a str,
    requirements: &'a Utf8Path,
    dist: &'a Utf8Path,
) -> EnvironmentSpec<'a> {
    EnvironmentSpec {
        python: Utf8Path::new(python),
        requirements,
        dist,
    }
}

fn builds_importable_env_then_reuses_it(installer: Installer) {
    let fixture = Fixture::new(installer.name());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let store = fixture
        .store(installer.clone())
        .with_progress(move |progress| {
            let label = match progress {
                Progress::RemovingLeftover { .. } => "leftover",
                Progress::Building { .. } => "building",
                Progress::Built { .. } => "built",
                _ => "other",
            };
            seen.lock().unwrap().push(label);
        });
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("dist");
    let spec = spec("python3", &requirements, &dist);

    let started = Instant::now();
    let venv = store.ensure(&spec).unwrap();
    let cold = started.elapsed();
    assert!(!venv.reused);
    assert_eq!(venv.path, fixture.path("store").join(venv.key.as_str()));
    assert_eq!(venv.key, store.key(&spec).unwrap());
    assert_eq!(*events.lock().unwrap(), ["building", "built"]);
    // uv builds in one staging folder, then the environment is moved: its
    // scripts name where it is now.
    assert_eq!(fixture.store_entries(), [venv.id.to_string()]);
    let activate = std::fs::read_to_string(venv.bin_dir().join("activate")).unwrap();
    assert!(activate.contains(venv.path.as_str()), "{activate}");
    assert!(!activate.contains(".staging"), "{activate}");

    let import = Command::new(venv.bin_dir().join("python"))
        .args([
            "-c",
            "import demo_pkg, demo_dep; print(demo_pkg.NAME, demo_dep.NAME)",
        ])
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    assert_eq!(
        String::from_utf8_lossy(&import.stdout),
        "demo-pkg demo-dep\n"
    );

    let started = Instant::now();
    let again = store.ensure(&spec).unwrap();
    let warm = started.elapsed();
    assert!(again.reused);
    assert_eq!(again.path, venv.path);
    // No Building event: the reuse ran no installer.
    assert_eq!(*events.lock().unwrap(), ["building", "built"]);
    eprintln!(
        "{}: cold build {cold:?}, warm reuse {warm:?}",
        installer.name()
    );
}

fn missing_requirement_fails_naming_package_and_leaves_nothing(installer: Installer) {
    let fixture = Fixture::new(installer.name());
    let store = fixture.store(installer);
    let requirements = fixture.write("bad.txt", "demo-pkg\nnot-there-pkg==2.0\n");
    let dist = fixture.path("dist");

    let err = store
        .ensure(&spec("python3", &requirements, &dist))
        .unwrap_err();
    let Error::Install {
        requirements: failed,
        detail,
    } = &err
    else {
        panic!("expected Error::Install, got {err:?}");
    };
    assert_eq!(failed, &requirements);
    assert!(
        detail.starts_with(&format!("no wheel in {dist} satisfies not-there-pkg\n")),
        "{detail}"
    );
    assert!(
        fixture.store_entries().is_empty(),
        "{:?}",
        fixture.store_entries()
    );
}

fn missing_interpreter_is_python_error(installer: Installer) {
    let fixture = Fixture::new(installer.name());
    let store = fixture.store(installer);
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("dist");
    let python = fixture.path("no-such-python3");

    let err = store
        .ensure(&spec(python.as_str(), &requirements, &dist))
        .unwrap_err();
    assert!(matches!(err, Error::Python { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("python interpreter {python} not found")
    );
}

/// The user's shell may point pip and uv at other package sources; a wheel
/// that exists only there must not be found.
fn shell_package_sources_are_ignored(installer: Installer) {
    let fixture = Fixture::new(installer.name());
    let leaky = fixture.path("leaky");
    std::fs::create_dir(&leaky).unwrap();
    build_wheel(&leaky, "leaky-pkg", &[]);
    let store = fixture.store(installer);
    let requirements = fixture.write("leaky.txt", "leaky-pkg\n");
    let dist = fixture.path("dist");

    let mut command = Command::new(std::env::current_exe().unwrap());
    // Run the check in a child test process so the hostile variables never
    // leak into other tests of this binary.
    if std::env::var_os("SARGE_VENV_HOSTILE_CHILD").is_none() {
        command
            .args([
                "--exact",
                "--nocapture",
                hostile_child_test_name(store.installer()),
            ])
            .env("SARGE_VENV_HOSTILE_CHILD", "1")
            .env("PIP_FIND_LINKS", &leaky)
            .env("UV_FIND_LINKS", &leaky)
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .env("UV_INDEX_URL", "http://127.0.0.1:9/simple")
            .env("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple")
            .env("UV_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple")
            .env("PIP_NO_INDEX", "0")
            .env("UV_OFFLINE", "false");
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
        return;
    }
    let err = store
        .ensure(&spec("python3", &requirements, &dist))
        .unwrap_err();
    let Error::Install { detail, .. } = &err else {
        panic!("expected Error::Install, got {err:?}");
    };
    assert!(detail.contains("satisfies leaky-pkg"), "{detail}");
}

fn hostile_child_test_name(installer: &Installer) -> &'static str {
    match installer {
        Installer::Uv { .. } => "uv_ignores_package_sources_from_shell_environment",
        Installer::Pip => "pip_ignores_package_sources_from_shell_environment",
    }
}

#[test]
fn uv_builds_importable_env_then_reuses_it() {
    builds_importable_env_then_reuses_it(uv());
}

#[test]
fn pip_builds_importable_env_then_reuses_it() {
    builds_importable_env_then_reuses_it(Installer::Pip);
}

#[test]
fn uv_missing_requirement_fails_naming_package_and_leaves_nothing() {
    missing_requirement_fails_naming_package_and_leaves_nothing(uv());
}

#[test]
fn pip_missing_requirement_fails_naming_package_and_leaves_nothing() {
    missing_requirement_fails_naming_package_and_leaves_nothing(Installer::Pip);
}

#[test]
fn uv_missing_interpreter_is_python_error() {
    missing_interpreter_is_python_error(uv());
}

#[test]
fn pip_missing_interpreter_is_python_error() {
    missing_interpreter_is_python_error(Installer::Pip);
}

#[test]
fn uv_ignores_package_sources_from_shell_environment() {
    shell_package_sources_are_ignored(uv());
}

#[test]
fn pip_ignores_package_sources_from_shell_environment() {
    shell_package_sources_are_ignored(Installer::Pip);
}

#[test]
fn pip_interpreter_without_venv_support_says_install_python3_venv() {
    let fixture = Fixture::new("noensurepip");
    // Stands in for Debian's python3 without python3-venv, printing what it
    // prints when asked for a venv.
    let python = fixture.write(
        "python3-without-venv",
        "#!/bin/sh\ncat <<'EOF'\nThe virtual environment was not created successfully because ensurepip is not\navailable.  On Debian/Ubuntu systems, you need to install the python3-venv\npackage using the following command.\n\n    apt install python3.11-venv\nEOF\nexit 1\n",
    );
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let store = fixture.store(Installer::Pip);
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("dist");

    let err = store
        .ensure(&spec(python.as_str(), &requirements, &dist))
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "python interpreter {python} has no venv support (ensurepip is missing; on Debian/Ubuntu install python3-venv):\n"
        )),
        "{message}"
    );
    assert!(fixture.store_entries().is_empty());
}

#[test]
fn missing_dist_folder_is_dist_error() {
    let fixture = Fixture::new("nodist");
    let store = fixture.store(Installer::Pip);
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("no-such-dist");
    let err = store
        .ensure(&spec("python3", &requirements, &dist))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Dist { path } if *path == dist),
        "{err:?}"
    );
}

#[test]
fn a_killed_builds_staging_folder_goes_once_its_installer_is_gone() {
    let fixture = Fixture::new("staging-leftover");
    let store = fixture.store(uv());
    let id = "a".repeat(64);
    let staging = fixture.path("store/.staging");
    std::fs::create_dir_all(staging.join("bin")).unwrap();
    std::fs::write(fixture.path("store/.staging-for"), &id).unwrap();
    // The installer the killed build orphaned holds that build's lock.
    let locks = fixture.path("cache/venv-locks");
    std::fs::create_dir_all(&locks).unwrap();
    let installer = std::fs::File::create(locks.join(format!("{id}.lock"))).unwrap();
    installer.lock().unwrap();
    assert_eq!(store.remove_unused(&BTreeSet::new()).unwrap(), []);
    assert!(staging.exists(), "removed under a running installer");
    drop(installer);
    assert_eq!(store.remove_unused(&BTreeSet::new()).unwrap(), []);
    assert!(!staging.exists());
    assert!(!fixture.path("store/.staging-for").exists());
}

#[test]
fn leftover_without_marker_is_removed_and_rebuilt() {
    let fixture = Fixture::new("leftover");
    let store = fixture.store(uv());
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("dist");
    let spec = spec("python3", &requirements, &dist);
    let key = store.key(&spec).unwrap();
    let leftover = fixture.path("store").join(key.as_str());
    std::fs::create_dir_all(leftover.join("lib")).unwrap();
    std::fs::write(leftover.join("lib/half-written"), "").unwrap();

    let venv = store.ensure(&spec).unwrap();
    assert!(!venv.reused);
    assert!(!leftover.join("lib/half-written").exists());
    assert!(venv.bin_dir().join("python").exists());
}

#[test]
fn concurrent_ensure_builds_once() {
    let fixture = Fixture::new("concurrent");
    let store = fixture.store(uv());
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("dist");
    let spec = spec("python3", &requirements, &dist);

    let results: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| store.ensure(&spec).unwrap().reused))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|reused| !**reused).count(),
        1,
        "{results:?}"
    );
}

#[test]
fn remove_unused_removes_unkept_environments_and_leftovers() {
    let fixture = Fixture::new("prune");
    let store = fixture.store(uv());
    let dist = fixture.path("dist");
    let pkg_requirements = fixture.path("requirements.txt");
    let dep_requirements = fixture.write("dep.txt", "demo-dep\n");
    let kept = store
        .ensure(&spec("python3", &pkg_requirements, &dist))
        .unwrap();
    let unused = store
        .ensure(&spec("python3", &dep_requirements, &dist))
        .unwrap();
    let leftover = VenvId::new(format!("{}-3", "ab".repeat(32)));
    std::fs::create_dir_all(fixture.path("store").join(leftover.as_str())).unwrap();
    std::fs::create_dir_all(fixture.path("store/not-a-key")).unwrap();
    std::fs::create_dir_all(
        fixture
            .path("store")
            .join(format!("{}-03", "ab".repeat(32))),
    )
    .unwrap();

    let removed = store
        .remove_unused(&BTreeSet::from([kept.id.clone()]))
        .unwrap();

    let mut expected = vec![unused.id, leftover];
    expected.sort();
    assert_eq!(removed, expected);
    let mut remaining = vec![
        kept.id.to_string(),
        "not-a-key".to_owned(),
        format!("{}-03", "ab".repeat(32)),
    ];
    remaining.sort();
    assert_eq!(fixture.store_entries(), remaining);
    assert!(
        store
            .ensure(&spec("python3", &pkg_requirements, &dist))
            .unwrap()
            .reused
    );
}

#[test]
fn built_environments_are_read_only_copies_and_a_changed_one_is_rebuilt() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let fixture = Fixture::new("sealed");
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let store = fixture.store(uv()).with_progress(move |progress| {
        if let Progress::Discarding { reason, .. } = progress {
            seen.lock().unwrap().push(reason.to_owned());
        }
    });
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("dist");
    let spec = spec("python3", &requirements, &dist);
    let venv = store.ensure(&spec).unwrap();
    let site = std::fs::read_dir(venv.path.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    let module = site.join("demo_pkg/__init__.py");
    let meta = std::fs::metadata(&module).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o222,
        0,
        "{module:?} is writable"
    );
    // A copy, not uv's cache file: an edit cannot reach the cache.
    assert_eq!(meta.nlink(), 1, "{module:?} is linked elsewhere");
    for path in [&venv.path.clone().into_std_path_buf(), &site] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "{path:?} is writable: {mode:o}");
    }
    assert!(store.ensure(&spec).unwrap().reused);
    // A check made moments before (a deploy makes one while it reads its
    // upload) stands for the one ensure would make.
    assert_eq!(store.check_unchanged(&venv.id), Ok(()));
    let checked = store.ensure_checked(&spec, |id| *id == venv.id).unwrap();
    assert!(checked.reused);
    assert_eq!(checked.id, venv.id);

    // What an app running as root (or one that chmods first) can do.
    let mode = std::fs::metadata(&site).unwrap().permissions().mode();
    std::fs::set_permissions(&site, std::fs::Permissions::from_mode(mode | 0o200)).unwrap();
    std::fs::write(site.join("evil.pth"), "import os\n").unwrap();
    assert!(store.check_unchanged(&venv.id).is_err());
    let rebuilt = store.ensure(&spec).unwrap();
    assert!(!rebuilt.reused);
    let python = site
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let reason = format!(
        "files in it changed after it was built: lib/{python}/site-packages/evil.pth, \
         lib/{python}/site-packages"
    );
    assert_eq!(*events.lock().unwrap(), std::slice::from_ref(&reason));
    assert_eq!(rebuilt.rebuilt_because, Some(reason));
    // Built beside the changed one, which instances may still run from:
    // that one is left exactly as it is until nothing uses it.
    assert_eq!(rebuilt.id.as_str(), format!("{}-1", venv.key));
    assert_ne!(rebuilt.path, venv.path);
    assert!(site.join("evil.pth").exists());
    assert!(site.join("demo_pkg/__init__.py").exists());
    let again = store.ensure(&spec).unwrap();
    assert!(again.reused);
    assert_eq!(again.id, rebuilt.id);
    assert_eq!(again.rebuilt_because, None);

    assert_eq!(
        store
            .remove_unused(&BTreeSet::from([rebuilt.id.clone()]))
            .unwrap(),
        [venv.id]
    );
    assert!(!venv.path.exists());
    assert!(store.ensure(&spec).unwrap().reused);
}

#[test]
fn a_changed_environment_in_use_elsewhere_stays_while_the_fresh_one_changes_too() {
    let fixture = Fixture::new("generations");
    let store = fixture.store(uv());
    let requirements = fixture.path("requirements.txt");
    let dist = fixture.path("dist");
    let spec = spec("python3", &requirements, &dist);
    let tamper = |venv: &sarge_venv::Venv| {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&venv.path).unwrap().permissions().mode();
        std::fs::set_permissions(&venv.path, std::fs::Permissions::from_mode(mode | 0o200))
            .unwrap();
        std::fs::write(venv.path.join("tampered"), "").unwrap();
    };
    let first = store.ensure(&spec).unwrap();
    tamper(&first);
    let second = store.ensure(&spec).unwrap();
    tamper(&second);
    let third = store.ensure(&spec).unwrap();
    assert_eq!(third.id.as_str(), format!("{}-2", first.key));
    assert!(first.path.join("tampered").exists());
    assert!(second.path.join("tampered").exists());
    // Only the newest generation is ever handed out.
    assert_eq!(store.ensure(&spec).unwrap().id, third.id);
    let removed = store
        .remove_unused(&BTreeSet::from([first.id.clone(), third.id.clone()]))
        .unwrap();
    assert_eq!(removed, [second.id]);
    assert_eq!(
        fixture.store_entries(),
        [first.id.to_string(), third.id.to_string()]
    );
}
