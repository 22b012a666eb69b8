//! Faults that come from what the app leaves in the home: folders it cannot
//! delete, files it writes into the shared virtualenv, logs that pile up.
//! Most run sarge as an unprivileged user (sarge's documented set-up),
//! since root ignores the permission bits these cases are about.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// The hello app's tarball plus an empty folder `locked` with mode 000.
fn tarball_with_mode_000_folder() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(".", hello_app()).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_path("locked/").unwrap();
    header.set_size(0);
    header.set_mode(0o000);
    header.set_cksum();
    builder.append(&header, std::io::empty()).unwrap();
    builder.into_inner().unwrap()
}

fn instance_folders(home: &TestHome) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.root.join("var/instances"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `home` keeping one release only: a redeploy prunes the one before, so
/// what the app left in its folder is removed right away.
fn keeping_one_release(home: TestHome) -> TestHome {
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    std::fs::write(home.config_path(), format!("{config}\nkeep_releases: 1\n")).unwrap();
    home
}

/// After a redeploy: the old instance is gone without a note about it, and
/// `list` and `destroy` work.
fn assert_old_instance_removed_and_home_usable(home: &TestHome, redeploy: &str, first: &str) {
    assert!(
        !redeploy.contains("could not remove") && !redeploy.contains("could not prune"),
        "the old instance or release was not removed:\n{redeploy}"
    );
    assert!(
        !home.root.join("var/releases/v1").exists(),
        "the pruned release v1 is still there"
    );
    let folders = instance_folders(home);
    assert!(
        !folders.contains(&first.to_owned()),
        "{first}'s folder is still there: {folders:?}"
    );
    assert_eq!(folders.len(), 1, "instance folders: {folders:?}");
    assert_eq!(home.instances().len(), 1);
    let out = home.sarge(&["destroy", "web"]);
    assert!(out.status.success(), "destroy failed: {}", stderr(&out));
    assert_eq!(instance_folders(home), Vec::<String>::new());
    assert!(home.instances().is_empty());
}

#[test]
fn a_mode_000_folder_in_the_tarball_does_not_wedge_the_home() {
    let home = keeping_one_release(TestHome::new_unprivileged("mode000", "  MESSAGE: locked"));
    let tarball = tarball_with_mode_000_folder();
    let out = home.deploy_bytes(&tarball, "web");
    assert!(out.status.success(), "deploy failed:\n{}", stderr(&out));
    let first = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let locked = home.root.join("var/releases/v1/app/locked");
    // The first defence: unpacking gives every folder u+rwx. The second
    // (removal makes folders writable) is pinned by the test of a folder
    // the app makes read-only.
    assert_eq!(
        std::fs::metadata(&locked).unwrap().permissions().mode() & 0o777,
        0o700,
        "the mode-000 folder was unpacked as is"
    );
    let out = home.deploy_bytes(&tarball, "web");
    assert!(out.status.success(), "redeploy failed:\n{}", stderr(&out));
    assert_old_instance_removed_and_home_usable(&home, &stderr(&out), &first);
}

#[test]
fn a_folder_the_app_made_read_only_does_not_wedge_the_home() {
    let home = keeping_one_release(TestHome::new_unprivileged("chmod555", "  MESSAGE: locked"));
    let app = app_copy("chmod555");
    std::fs::write(
        app.join("Procfile"),
        "web: mkdir -p made && echo data > made/file && chmod 555 made && exec python app.py $PORT\n",
    )
    .unwrap();
    home.deploy_ok(&app, "web");
    let first = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let made = home.root.join("var/releases/v1/app/made");
    assert_eq!(
        std::fs::metadata(&made).unwrap().permissions().mode() & 0o777,
        0o555
    );
    let redeploy = home.deploy_ok(&app, "web");
    assert_old_instance_removed_and_home_usable(&home, &redeploy, &first);
    let _ = std::fs::remove_dir_all(&app);
}

#[test]
fn a_folder_sarge_cannot_delete_is_reported_and_blocks_no_command() {
    let home = keeping_one_release(TestHome::new_unprivileged(
        "undeletable",
        "  MESSAGE: stuck",
    ));
    if !home.is_unprivileged() {
        eprintln!("not run: only a suite run as root can make a folder sarge's user cannot delete");
        return;
    }
    home.deploy_ok(&hello_app(), "web");
    let first = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    // A folder of root's inside the instance: no chmod by the instance's
    // user can make it deletable.
    let stuck = home.root.join("var/releases/v1/app/stuck");
    std::fs::create_dir(&stuck).unwrap();
    std::fs::write(stuck.join("file"), "root's").unwrap();

    home.deploy_ok(&hello_app(), "web");
    // Pruning follows the old instance's retirement, in the background.
    let retirement = std::fs::read_to_string(home.root.join("var/log/sarge-retire.log")).unwrap();
    assert!(
        retirement.contains("could not prune old releases"),
        "the failed cleanup was not reported:\n{retirement}"
    );
    assert!(!instance_folders(&home).contains(&first));
    let out = home.sarge(&["list"]);
    assert!(out.status.success(), "list failed: {}", stderr(&out));
    let out = home.deploy(&hello_app(), "web");
    assert!(out.status.success(), "deploy failed: {}", stderr(&out));
    // The note names the file and why it could not be deleted.
    let file = stuck.join("file");
    assert!(
        stderr(&out).contains(&format!(
            "could not remove an old release's folder (remove file {}: Permission denied",
            file.display()
        )),
        "the retry's failure was not reported:\n{}",
        stderr(&out)
    );
    let out = home.sarge(&["destroy", "web"]);
    assert!(out.status.success(), "destroy failed: {}", stderr(&out));

    // Once it can be deleted, the next recovery removes it (`list` only
    // reads).
    std::fs::remove_dir_all(&stuck).unwrap();
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "recover failed: {}", stderr(&out));
    assert!(!home.root.join("var/releases/v1").exists());
    assert!(home.instances().is_empty());
    assert_eq!(instance_folders(&home), Vec::<String>::new());
}

/// A copy of the hello app whose app.py runs `prelude` first.
fn app_with_prelude(name: &str, prelude: &str) -> PathBuf {
    let app = app_copy(name);
    let original = std::fs::read_to_string(app.join("app.py")).unwrap();
    std::fs::write(app.join("app.py"), format!("{prelude}\n{original}")).unwrap();
    app
}

/// The site-packages folders of every virtualenv in the home.
fn site_packages(home: &TestHome) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for venv in std::fs::read_dir(home.root.join("var/venvs")).unwrap() {
        let lib = venv.unwrap().path().join("lib");
        for python in std::fs::read_dir(lib).unwrap() {
            found.push(python.unwrap().path().join("site-packages"));
        }
    }
    found
}

/// The app writes a `.pth` into its virtualenv at start; a `.pth` line that
/// starts with `import` runs in every later interpreter using that venv.
fn pth_planting_app(name: &str, marker: &Path) -> PathBuf {
    let pth = format!(
        "import pathlib; pathlib.Path({marker:?}).write_text('ran')",
        marker = marker.display().to_string()
    );
    app_with_prelude(
        name,
        &format!(
            "import site\ntry:\n    open(site.getsitepackages()[0] + '/evil.pth', 'w').write({pth:?} + '\\n')\n    print('wrote evil.pth', flush=True)\nexcept OSError as error:\n    print('could not write evil.pth:', error, flush=True)\n"
        ),
    )
}

fn a_pth_written_by_one_release_never_runs_in_the_next(home: &TestHome, name: &str) {
    let marker = std::env::temp_dir().join(format!("sarge-evil-pth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let app = pth_planting_app(name, &marker);
    home.deploy_ok(&app, "web");
    // The first instance has run its prelude once it answers.
    let redeploy = home.deploy_ok(&app, "web");
    let ran = marker.exists();
    let _ = std::fs::remove_file(&marker);
    assert!(
        !ran,
        "evil.pth from the first release ran in the second:\n{redeploy}"
    );
    if home.is_unprivileged() {
        // The write was refused, so the venv is as built and reused.
        for dir in site_packages(home) {
            assert!(
                !dir.join("evil.pth").exists(),
                "{} holds evil.pth",
                dir.display()
            );
        }
        assert!(redeploy.contains("reused"), "{redeploy}");
    } else {
        // Root's write succeeded (and the second release wrote it again,
        // after its start): the changed venv was rebuilt, not reused.
        assert!(
            redeploy.contains("installed requirements.txt"),
            "{redeploy}"
        );
    }
    let _ = std::fs::remove_dir_all(&app);
}

#[test]
fn a_pth_written_into_the_venv_never_runs_in_the_next_release() {
    let home = TestHome::new_unprivileged("evilpth", "  MESSAGE: pth");
    a_pth_written_by_one_release_never_runs_in_the_next(&home, "evilpth");
}

/// Root ignores the read-only bits, so here the write succeeds and the
/// fingerprint check must catch it.
#[test]
fn a_pth_written_into_the_venv_by_root_never_runs_in_the_next_release() {
    let home = TestHome::new("evilpthroot", "  MESSAGE: pth");
    a_pth_written_by_one_release_never_runs_in_the_next(&home, "evilpthroot");
}

/// The app appends a line to flask/__init__.py of its venv at start.
fn flask_editing_app(name: &str) -> PathBuf {
    app_with_prelude(
        name,
        "import flask\ntry:\n    with open(flask.__file__, 'a') as f:\n        f.write('\\nSARGE_TAMPERED = True\\n')\n    print('edited', flask.__file__, flush=True)\nexcept OSError as error:\n    print('could not edit flask:', error, flush=True)\n",
    )
}

/// Fails if the only venv's flask holds the edit.
fn assert_flask_unedited(home: &TestHome, case: &str) {
    let venvs = site_packages(home);
    assert_eq!(venvs.len(), 1, "{case}: {venvs:?}");
    let flask = std::fs::read_to_string(venvs[0].join("flask/__init__.py")).unwrap();
    assert!(
        !flask.contains("SARGE_TAMPERED"),
        "{case}: the first release's edit of flask is in {}",
        venvs[0].display()
    );
}

/// Run as root (so the edit succeeds) with uv: uv used to hardlink files
/// from its cache, so an in-place edit of a package changed the cache and
/// every venv built from it afterwards.
#[test]
fn an_in_place_edit_of_a_package_never_reaches_a_later_release() {
    let home = TestHome::new("editflask", "  MESSAGE: edit");
    let app = flask_editing_app("editflask");
    home.deploy_ok(&app, "web");
    // The same requirements, with an app that edits nothing: the edited
    // venv must not be reused as it is.
    std::fs::write(
        app.join("app.py"),
        std::fs::read(hello_app().join("app.py")).unwrap(),
    )
    .unwrap();
    let redeploy = home.deploy_ok(&app, "web");
    assert!(
        redeploy.contains("installed requirements.txt"),
        "{redeploy}"
    );
    assert_flask_unedited(&home, "same requirements");

    // The edit again, then another pin set (the key covers the
    // requirements' bytes): a new venv, installed from the cache the
    // edited one came from.
    let app = flask_editing_app("editflask");
    home.deploy_ok(&app, "web");
    let mut requirements = std::fs::read_to_string(app.join("requirements.txt")).unwrap();
    requirements.push_str("# second pin set\n");
    std::fs::write(app.join("requirements.txt"), requirements).unwrap();
    std::fs::write(
        app.join("app.py"),
        std::fs::read(hello_app().join("app.py")).unwrap(),
    )
    .unwrap();
    let redeploy = home.deploy_ok(&app, "web");
    assert!(
        redeploy.contains("installed requirements.txt"),
        "{redeploy}"
    );
    assert_flask_unedited(&home, "new pin set");
    let _ = std::fs::remove_dir_all(&app);
}

/// As sarge's non-root user the venv is read-only: the edit fails, and the
/// venv is reused as it was built.
#[test]
fn an_app_cannot_edit_its_venv_as_a_non_root_user() {
    let home = TestHome::new_unprivileged("editflaskuser", "  MESSAGE: edit");
    let app = flask_editing_app("editflaskuser");
    home.deploy_ok(&app, "web");
    let redeploy = home.deploy_ok(&app, "web");
    assert!(redeploy.contains("reused"), "{redeploy}");
    assert_flask_unedited(&home, "non-root");
    let log = std::fs::read_to_string(home.root.join("var/log").join(format!(
        "{}.log",
        home.instance_of("web")["id"].as_str().unwrap()
    )))
    .unwrap();
    assert!(log.contains("could not edit flask"), "{log}");
    let _ = std::fs::remove_dir_all(&app);
}

/// A folder holding only `uv`, for [`TEST_USER`]'s `PATH`: the uv on
/// root's `PATH` lies under /root, which that user cannot enter, so its
/// deploys would install with pip and never fill uv's cache. Removed when
/// dropped.
struct UvForTestUser {
    dir: PathBuf,
}

impl UvForTestUser {
    fn new(name: &str) -> Self {
        // `uv run` tells the command it runs where uv itself is, also when
        // `uv` on PATH is a pyenv shim.
        let out = std::process::Command::new("uv")
            .args(["run", "--no-project", "--no-config", "--offline"])
            .args(["--", "printenv", "UV"])
            .output()
            .unwrap_or_else(|err| {
                panic!("uv cannot be run ({err}): run `scripts/setup`, which installs it")
            });
        assert!(
            out.status.success(),
            "uv cannot be run: run `scripts/setup`, which installs it: {}",
            stderr(&out)
        );
        let uv = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let dir = std::env::temp_dir().join(format!("sarge-e2e-uv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if std::fs::hard_link(&uv, dir.join("uv")).is_err() {
            std::fs::copy(&uv, dir.join("uv")).unwrap();
            std::fs::set_permissions(dir.join("uv"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        UvForTestUser { dir }
    }

    /// `sarge deploy - PROCESS` of `app` in `home`, with this uv on PATH.
    fn deploy_ok(&self, home: &TestHome, app: &Path, process: &str) -> String {
        let mut command = home.command(&["deploy", "-", process]);
        command.env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                self.dir.display()
            ),
        );
        let out = run_with_stdin(command, &tar_of(app));
        home.wait_unlocked();
        assert!(out.status.success(), "deploy failed:\n{}", stderr(&out));
        stderr(&out)
    }
}

impl Drop for UvForTestUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The app tries, at start, to change every copy of flask in uv's cache
/// (`var/cache`, found from its venv's path): append to its
/// `__init__.py`, add a `.pth` beside it (the whole entry is copied into
/// a new venv), rename the entry aside, and rename the cache's
/// `archive-v0` aside. With `chmod_first`, it first gives itself write
/// permission on the file it appends to, as the file's owner can.
fn cache_editing_app(name: &str, chmod_first: bool) -> PathBuf {
    let chmod = if chmod_first {
        "os.chmod(init, 0o600), "
    } else {
        ""
    };
    app_with_prelude(
        name,
        &format!(
            "import glob, os, sys
cache = os.path.join(os.path.dirname(os.path.dirname(sys.prefix)), 'cache')
def attempt(what, action):
    try:
        action()
        print('cache: did', what, flush=True)
    except OSError as error:
        print('cache: could not', what + ':', error, flush=True)
inits = glob.glob(cache + '/archive-v0/*/flask/__init__.py')
print('cache: found', len(inits), 'flask', flush=True)
for init in inits:
    entry = os.path.dirname(os.path.dirname(init))
    attempt('edit flask', lambda: ({chmod}open(init, 'a').write('\\nSARGE_TAMPERED = True\\n')))
    attempt('add evil.pth', lambda: open(entry + '/evil.pth', 'w').write('import os\\n'))
    attempt('rename the entry', lambda: os.rename(entry, entry + '.old'))
attempt('rename archive-v0', lambda: os.rename(cache + '/archive-v0', cache + '/archive-v0.old'))
"
        ),
    )
}

/// The current `web` instance's log.
fn web_log(home: &TestHome) -> String {
    std::fs::read_to_string(home.root.join("var/log").join(format!(
        "{}.log",
        home.instance_of("web")["id"].as_str().unwrap()
    )))
    .unwrap()
}

/// Fails if any venv's flask holds the edit or any site-packages the
/// `.pth`.
fn assert_no_venv_edited(home: &TestHome, case: &str) {
    for dir in site_packages(home) {
        let flask = std::fs::read_to_string(dir.join("flask/__init__.py")).unwrap();
        assert!(
            !flask.contains("SARGE_TAMPERED"),
            "{case}: the edit of flask is in {}",
            dir.display()
        );
        assert!(
            !dir.join("evil.pth").exists(),
            "{case}: {} holds evil.pth",
            dir.display()
        );
    }
}

/// `app`'s requirements with a comment added: another key, so the next
/// deploy installs a new venv, from uv's cache.
fn new_pin_set(app: &Path, comment: &str) {
    let mut requirements = std::fs::read_to_string(app.join("requirements.txt")).unwrap();
    requirements.push_str(&format!("# {comment}\n"));
    std::fs::write(app.join("requirements.txt"), requirements).unwrap();
}

/// uv copies every new venv from its cache, which belongs to the user the
/// apps run as. Between installs the cache is read-only, so an app's
/// writes fail; an edit made anyway (after a chmod) changes its
/// fingerprint, and the next install empties the cache first.
#[test]
fn an_app_cannot_change_what_uvs_cache_gives_later_venvs_as_a_non_root_user() {
    let home = TestHome::new_unprivileged("editcache", "  MESSAGE: cache");
    let uv = UvForTestUser::new("editcache");
    let app = cache_editing_app("editcache", false);
    uv.deploy_ok(&home, &app, "web");
    let log = web_log(&home);
    assert!(
        log.contains("cache: found 1 flask"),
        "the install did not use uv's cache:\n{log}"
    );
    for what in [
        "edit flask",
        "add evil.pth",
        "rename the entry",
        "rename archive-v0",
    ] {
        assert!(
            log.contains(&format!(
                "cache: could not {what}: [Errno 13] Permission denied"
            )),
            "the app could {what}:\n{log}"
        );
    }

    // A new venv, from the cache the app tried to change.
    std::fs::write(
        app.join("app.py"),
        std::fs::read(hello_app().join("app.py")).unwrap(),
    )
    .unwrap();
    new_pin_set(&app, "second pin set");
    let redeploy = uv.deploy_ok(&home, &app, "web");
    assert!(
        redeploy.contains("installed requirements.txt"),
        "{redeploy}"
    );
    assert!(!redeploy.contains("installer's cache"), "{redeploy}");
    assert_eq!(site_packages(&home).len(), 2);
    assert_no_venv_edited(&home, "a plain write");

    // The owner can chmod its way in: the fingerprint sees the edit.
    let app = cache_editing_app("editcache", true);
    new_pin_set(&app, "second pin set");
    uv.deploy_ok(&home, &app, "web");
    let log = web_log(&home);
    assert!(log.contains("cache: did edit flask"), "{log}");
    std::fs::write(
        app.join("app.py"),
        std::fs::read(hello_app().join("app.py")).unwrap(),
    )
    .unwrap();
    new_pin_set(&app, "third pin set");
    let redeploy = uv.deploy_ok(&home, &app, "web");
    assert!(
        redeploy.contains("installed requirements.txt")
            && redeploy.contains("the installer's cache could not be trusted (files in it changed since the last install: archive-v0/"),
        "{redeploy}"
    );
    assert_no_venv_edited(&home, "an edit after a chmod");
    let _ = std::fs::remove_dir_all(&app);
}

/// The log files of `web` instances in var/log (rotated ones included).
fn web_logs(home: &TestHome) -> Vec<String> {
    let mut logs: Vec<String> = std::fs::read_dir(home.root.join("var/log"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("web-") && name.contains(".log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn removed_instances_logs_do_not_pile_up() {
    let home = TestHome::new("logs", "  MESSAGE: logs");
    for _ in 0..9 {
        home.deploy_ok(&hello_app(), "web");
    }
    let logs = web_logs(&home);
    // The current instance's log and those of the last 5 removed ones.
    assert_eq!(logs.len(), 6, "{logs:?}");
    let current = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    assert!(logs.contains(&format!("{current}.log")), "{logs:?}");
    // Each instance's log is bounded too: rotated at 50 MB with 5 backups
    // (`log_max_bytes`, `log_backups`: their defaults).
    let program = std::fs::read_to_string(
        home.root
            .join("etc/supervisor.d")
            .join(format!("{current}.conf")),
    )
    .unwrap();
    assert!(
        program.contains("stdout_logfile_maxbytes=52428800\nstdout_logfile_backups=5\n"),
        "{program}"
    );
    let out = home.sarge(&["destroy", "web"]);
    assert!(out.status.success(), "destroy failed: {}", stderr(&out));
    assert_eq!(web_logs(&home).len(), 5, "{:?}", web_logs(&home));
}
