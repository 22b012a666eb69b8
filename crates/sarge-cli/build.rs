//! Stamps `sarge --version` with the git commit the binary was built from,
//! `0.1.0 (4b9ab51)`, so a binary copied to a server says which code it
//! runs. Outside a checkout of sarge (a crate tarball, no `git`) it is the
//! version alone.
//!
//! There is no `-dirty` mark: knowing whether the tree changed would mean
//! re-running this script on every file change, and a mark that can be
//! stale is worse than none.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let stamped = match commit(&manifest_dir) {
        Some(commit) => format!("{version} ({commit})"),
        None => version,
    };
    println!("cargo:rustc-env=SARGE_BUILD_VERSION={stamped}");
}

/// The short commit of HEAD, when this crate is built from a checkout of
/// sarge itself; also asks cargo to run this script again when HEAD moves.
fn commit(manifest_dir: &Path) -> Option<String> {
    // Only sarge's own repository counts: a copy of the crate vendored into
    // another project's repository must not take that project's commit.
    let toplevel = git(manifest_dir, &["rev-parse", "--show-toplevel"])?;
    let workspace = manifest_dir.join("../..").canonicalize().ok()?;
    if Path::new(&toplevel).canonicalize().ok()? != workspace {
        return None;
    }
    let commit = git(manifest_dir, &["rev-parse", "--short", "HEAD"])?;
    // HEAD names the branch; the branch's ref moves on each commit. In a
    // worktree they live in different folders, which --git-path resolves.
    // A path that does not exist would make cargo run this script on every
    // build, so only existing ones are named: a packed ref is watched
    // through packed-refs and its folder, where the next commit writes it.
    let path = |name: &str| {
        git(manifest_dir, &["rev-parse", "--git-path", name]).map(|path| manifest_dir.join(path))
    };
    let mut watched: Vec<PathBuf> = [path("HEAD"), path("packed-refs")]
        .into_iter()
        .flatten()
        .collect();
    if let Some(branch) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]).and_then(|b| path(&b))
    {
        match branch.parent() {
            Some(folder) if !branch.exists() => watched.push(folder.to_path_buf()),
            _ => watched.push(branch),
        }
    }
    for path in watched.into_iter().filter(|path| path.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(commit)
}

/// `git ARGS` run in `dir`: its trimmed stdout, or `None` if git is
/// missing or fails (not a repository, a repository owned by another user).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
