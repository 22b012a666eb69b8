#![allow(clippy::unwrap_used)]
//! A deploy in two phases: `deploy --prepare` starts the new release's
//! instances and leaves the old one serving; `switch` serves the new one
//! with no failed request; `discard`, a newer change or `prepared_timeout`
//! removes a prepared release that was never switched.

mod common;

use common::*;

/// The hello app saying `text` on its homepage.
fn app_saying(name: &str, text: &str) -> std::path::PathBuf {
    let app = std::fs::read_to_string(hello_app().join("app.py"))
        .unwrap()
        .replace("\"hello web!\"", &format!("{text:?}"));
    app_with(name, &[("app.py", &app)])
}

fn prepare(home: &TestHome, app: &std::path::Path, extra: &[&str]) -> String {
    let tarball = tar_of(app);
    let path = home.root.join("upload.tar");
    std::fs::write(&path, tarball).unwrap();
    let mut args = vec!["deploy", "--prepare"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let out = home.sarge(&args);
    assert!(out.status.success(), "prepare failed: {}", stderr(&out));
    let release = stdout(&out).trim().to_owned();
    assert!(release.starts_with('v'), "{release:?}");
    release
}

fn instance_dirs(home: &TestHome) -> usize {
    std::fs::read_dir(home.root.join("var/instances"))
        .unwrap()
        .count()
}

#[test]
fn prepare_leaves_the_old_release_serving_and_switch_serves_the_new_one() {
    let home = TestHome::new("prepared-switch", "");
    home.deploy_ok(&app_saying("prepared-one", "one"), "web");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");

    let load = Load::start(home.stable);
    let release = prepare(&home, &app_saying("prepared-two", "two"), &[]);
    // Nothing switched: the old instance serves, the new one runs beside it.
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");
    assert_eq!(instance_dirs(&home), 2);
    assert_eq!(
        home.instances().len(),
        1,
        "list shows current instances only"
    );
    assert_ne!(home.releases()[0]["id"], release.as_str());

    let out = home.sarge(&["switch", &release]);
    let (fresh, kept) = load.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "two\n");
    assert_eq!(home.releases()[0]["id"], release.as_str());
    assert_eq!(home.releases()[0]["current"], true);
    assert_eq!(instance_dirs(&home), 1);

    // Switched once; there is nothing prepared any more.
    let out = home.sarge(&["switch", &release]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "release {release} is not prepared (prepared: none)"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn discard_and_a_newer_deploy_remove_a_prepared_release() {
    let home = TestHome::new("prepared-discard", "");
    home.deploy_ok(&app_saying("discard-one", "one"), "web");
    let release = prepare(&home, &app_saying("discard-two", "two"), &[]);
    let out = home.sarge(&["discard", &release]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(instance_dirs(&home), 1);
    assert!(!home.root.join("var/releases").join(&release).exists());
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");

    // A newer prepare never reuses the id a client may still hold.
    let second = prepare(&home, &app_saying("discard-three", "three"), &[]);
    assert_ne!(second, release);
    // A deploy made meanwhile supersedes it: its instances go.
    home.deploy_ok(&app_saying("discard-four", "four"), "web");
    assert_eq!(instance_dirs(&home), 1);
    let out = home.sarge(&["switch", &second]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not prepared"), "{}", stderr(&out));
    assert_eq!(http_get(home.stable, "/").unwrap().1, "four\n");
}

#[test]
fn a_prepared_release_never_switched_is_discarded_after_prepared_timeout() {
    let home = TestHome::new("prepared-expiry", "");
    home.write_config("", "prepared_timeout: 1\n");
    home.deploy_ok(&app_saying("expiry-one", "one"), "web");
    // The client "vanishes" between the phases.
    let release = prepare(&home, &app_saying("expiry-two", "two"), &[]);
    assert_eq!(instance_dirs(&home), 2);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("release {release} was prepared but not switched")),
        "{}",
        stderr(&out)
    );
    assert_eq!(instance_dirs(&home), 1);
    assert!(!home.root.join("var/releases").join(&release).exists());
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");
}

#[test]
fn no_release_command_skips_the_procfile_release_line() {
    let home = TestHome::new("prepared-relcmd", "");
    let procfile = "web: python app.py $PORT\nrelease: python -c \"print('MIGRATED')\"\n";
    let app = app_with("prepared-relcmd", &[("Procfile", procfile)]);
    let first = prepare(&home, &app, &["--no-release-command"]);
    let out = home.sarge(&["switch", &first]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!home
        .sarge(&["releases", "--output", &first])
        .status
        .success());
    let second = prepare(&home, &app, &[]);
    let out = home.sarge(&["switch", &second]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = home.sarge(&["releases", "--output", &second]);
    assert!(stdout(&out).contains("MIGRATED"), "{}", stdout(&out));
}
