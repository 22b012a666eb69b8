//! Faults that come from what the app leaves in the home: folders it cannot
//! delete, files it writes into the shared virtualenv, logs that pile up.
//! Most run sarge as an unprivileged user (sarge's documented set-up),
//! since root ignores the permission bits these cases are about.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

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

/// After a redeploy: the old instance is gone without a note about it, and
/// `list` and `destroy` work.
fn assert_old_instance_removed_and_home_usable(home: &TestHome, redeploy: &str, first: &str) {
    assert!(
        !redeploy.contains("could not remove"),
        "the old instance was not removed:\n{redeploy}"
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
    let home = TestHome::new_unprivileged("mode000", "  MESSAGE: locked");
    let tarball = tarball_with_mode_000_folder();
    let out = home.deploy_bytes(&tarball, "web");
    assert!(out.status.success(), "deploy failed:\n{}", stderr(&out));
    let first = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let locked = home
        .root
        .join("var/instances")
        .join(&first)
        .join("app/locked");
    assert_eq!(
        std::fs::metadata(&locked).unwrap().permissions().mode() & 0o777,
        0,
        "the tarball's mode was not kept, so this test shows nothing"
    );
    let out = home.deploy_bytes(&tarball, "web");
    assert!(out.status.success(), "redeploy failed:\n{}", stderr(&out));
    assert_old_instance_removed_and_home_usable(&home, &stderr(&out), &first);
}

#[test]
fn a_folder_the_app_made_read_only_does_not_wedge_the_home() {
    let home = TestHome::new_unprivileged("chmod555", "  MESSAGE: locked");
    let app = app_copy("chmod555");
    std::fs::write(
        app.join("Procfile"),
        "web: mkdir -p made && echo data > made/file && chmod 555 made && exec python app.py $PORT\n",
    )
    .unwrap();
    home.deploy_ok(&app, "web");
    let first = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let made = home
        .root
        .join("var/instances")
        .join(&first)
        .join("app/made");
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
    let home = TestHome::new_unprivileged("undeletable", "  MESSAGE: stuck");
    if !home.is_unprivileged() {
        eprintln!("not run: only a suite run as root can make a folder sarge's user cannot delete");
        return;
    }
    home.deploy_ok(&hello_app(), "web");
    let first = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    // A folder of root's inside the instance: no chmod by the instance's
    // user can make it deletable.
    let stuck = home
        .root
        .join("var/instances")
        .join(&first)
        .join("app/stuck");
    std::fs::create_dir(&stuck).unwrap();
    std::fs::write(stuck.join("file"), "root's").unwrap();

    let redeploy = home.deploy_ok(&hello_app(), "web");
    assert!(
        redeploy.contains(&format!("could not remove the old instance {first}")),
        "the failed cleanup was not reported:\n{redeploy}"
    );
    let out = home.sarge(&["list"]);
    assert!(out.status.success(), "list failed: {}", stderr(&out));
    let out = home.deploy(&hello_app(), "web");
    assert!(out.status.success(), "deploy failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("could not remove {first}")),
        "the retry's failure was not reported:\n{}",
        stderr(&out)
    );
    let out = home.sarge(&["destroy", "web"]);
    assert!(out.status.success(), "destroy failed: {}", stderr(&out));

    // Once it can be deleted, the next command removes it.
    std::fs::remove_dir_all(&stuck).unwrap();
    assert!(home.instances().is_empty());
    assert_eq!(instance_folders(&home), Vec::<String>::new());
}
