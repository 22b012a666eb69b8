//! Content addresses for environments: what an environment is built from,
//! reduced to one SHA-256.
//!
//! Only `stat` and one read of the requirements file happen here, so a
//! redeploy can tell "nothing changed" without starting any process.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::str::FromStr;

use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::installer::Installer;
use crate::requirements;
use crate::store::EnvironmentSpec;

/// Bumped whenever the layout of a built environment or the inputs hashed
/// below change, so old environments are never mistaken for new ones.
const FORMAT_VERSION: &str = "sarge-venv/1";

/// The name of one environment in a [`VenvStore`](crate::VenvStore): the
/// hex SHA-256 of everything the environment was built from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvKey(String);

impl EnvKey {
    /// Wraps a key read back from the caller's own records, unchecked: a
    /// string that is not a key simply never matches a stored environment.
    /// Use [`str::parse`] to reject anything but 64 lowercase hex digits.
    pub fn new(key: impl Into<String>) -> EnvKey {
        EnvKey(key.into())
    }

    /// The key as 64 lowercase hex digits, which is also its folder name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EnvKey {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        let is_key = value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_key {
            Ok(EnvKey(value.to_owned()))
        } else {
            Err(Error::Key {
                value: value.to_owned(),
            })
        }
    }
}

/// The name of one built environment's folder in a
/// [`VenvStore`](crate::VenvStore): its [`EnvKey`], then `-<n>` for the
/// n-th fresh build of that key.
///
/// A changed environment is never rebuilt in place, since instances may be
/// running from it: the replacement gets the next generation's folder, and
/// callers keep environments alive by this id, not by key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VenvId(String);

impl VenvId {
    /// Wraps an id read back from the caller's own records, unchecked: a
    /// string that is not an id never matches a stored environment. A bare
    /// [`EnvKey`] (what older records hold) names the first generation.
    pub fn new(id: impl Into<String>) -> VenvId {
        VenvId(id.into())
    }

    /// The id as written: the folder's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key this environment was built for.
    pub fn key(&self) -> Option<EnvKey> {
        parse_id(&self.0).map(|(key, _)| key)
    }

    pub(crate) fn of(key: &EnvKey, generation: u32) -> VenvId {
        if generation == 0 {
            VenvId(key.0.clone())
        } else {
            VenvId(format!("{key}-{generation}"))
        }
    }
}

impl fmt::Display for VenvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key and generation an environment folder's name stands for, when
/// it is `<key>` or `<key>-<n>` with `n` a positive number without leading
/// zeros (so no two names stand for the same folder).
pub(crate) fn parse_id(name: &str) -> Option<(EnvKey, u32)> {
    let (key, generation) = match name.split_once('-') {
        None => (name, 0),
        Some((key, number)) => {
            let leading_zero = number.starts_with('0');
            if leading_zero || !number.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (key, number.parse::<u32>().ok()?)
        }
    };
    Some((key.parse().ok()?, generation))
}

/// Feeds length-prefixed fields so that no two different input lists can
/// produce the same byte stream.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn number(&mut self, value: i128) {
        self.field(&value.to_le_bytes());
    }

    fn stat(&mut self, meta: &std::fs::Metadata) {
        self.number(i128::from(meta.size()));
        self.number(nanos(meta.mtime(), meta.mtime_nsec()));
        self.number(i128::from(meta.ino()));
    }

    fn finish(self) -> EnvKey {
        let digest = self.0.finalize();
        EnvKey(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn nanos(seconds: i64, nanoseconds: i64) -> i128 {
    i128::from(seconds) * 1_000_000_000 + i128::from(nanoseconds)
}

/// Computes the key for `spec` built by `installer`, and returns the
/// interpreter's canonical path so the build uses exactly what was hashed.
pub(crate) fn compute(
    spec: &EnvironmentSpec<'_>,
    installer: &Installer,
) -> Result<(EnvKey, Utf8PathBuf)> {
    let mut hasher = KeyHasher(Sha256::new());
    hasher.field(FORMAT_VERSION.as_bytes());
    hasher.field(installer.name().as_bytes());

    // Checked before anything else reads them: nothing outside the app may
    // be read on an app's say-so, not even to compute a key.
    let files = requirements::read_checked(spec.requirements)?;
    let mut files = files.into_iter();
    if let Some(top) = files.next() {
        hasher.field(&top.bytes);
    }
    // Included files are part of what is installed. A prefix no
    // interpreter path (absolute) can have keeps the fields unambiguous,
    // and a file without includes keeps the key it always had.
    for included in files {
        hasher.field(format!("include {}", included.name).as_bytes());
        hasher.field(&included.bytes);
    }

    let python = resolve_python(spec.python)?;
    let python_meta = std::fs::metadata(&python).map_err(|err| Error::Python {
        python: spec.python.to_owned(),
        detail: format!("cannot be inspected: {err}"),
    })?;
    hasher.field(python.as_str().as_bytes());
    hasher.stat(&python_meta);

    fingerprint_dist(&mut hasher, spec.dist)?;
    Ok((hasher.finish(), python))
}

/// Every file's identity, not its contents: hashing hundreds of megabytes
/// of wheels on each deploy would defeat the point. ctime and inode catch a
/// wheel replaced under the same name even if size and mtime were kept.
fn fingerprint_dist(hasher: &mut KeyHasher, dist: &Utf8Path) -> Result<()> {
    let not_found = || Error::Dist {
        path: dist.to_owned(),
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dist).map_err(|_| not_found())? {
        let entry = entry.map_err(|_| not_found())?;
        // A dangling symlink still belongs in the fingerprint; its own
        // metadata is the best identity there is.
        let meta = match std::fs::metadata(entry.path()) {
            Ok(meta) => meta,
            Err(_) => entry.metadata().map_err(|_| not_found())?,
        };
        entries.push((entry.file_name(), meta));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    hasher.number(entries.len() as i128);
    for (name, meta) in &entries {
        hasher.field(name.as_bytes());
        hasher.stat(meta);
        hasher.number(nanos(meta.ctime(), meta.ctime_nsec()));
    }
    Ok(())
}

/// Resolves a bare name through `PATH` like a shell would, then
/// canonicalizes, so `python3` and `/usr/bin/python3` share environments.
pub(crate) fn resolve_python(python: &Utf8Path) -> Result<Utf8PathBuf> {
    let not_found = || Error::Python {
        python: python.to_owned(),
        detail: "not found".to_owned(),
    };
    let candidate = if python.as_str().contains('/') {
        python.as_std_path().to_owned()
    } else {
        find_on_path(python.as_str()).ok_or_else(not_found)?
    };
    let canonical = std::fs::canonicalize(&candidate).map_err(|_| not_found())?;
    // A wrapper that cannot answer stays as it is: building with it then
    // reports what is wrong (no venv support, say) in its own words.
    let canonical = if is_script(&canonical) {
        interpreter_behind(&canonical).unwrap_or(canonical)
    } else {
        canonical
    };
    Utf8PathBuf::from_path_buf(canonical).map_err(|path| Error::Python {
        python: python.to_owned(),
        detail: format!("resolves to a path that is not UTF-8: {}", path.display()),
    })
}

/// Whether `path` is a `#!` script rather than an interpreter binary.
fn is_script(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut head))
        .is_ok()
        && head == *b"#!"
}

/// The interpreter a wrapper script (a pyenv or asdf shim) runs, asked of
/// the script itself. Hashing the shim instead would keep serving an
/// environment built for another Python after the shim is repointed. Costs
/// one run of the wrapper, only for wrappers.
fn interpreter_behind(script: &std::path::Path) -> Option<std::path::PathBuf> {
    let output = std::process::Command::new(script)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let printed = String::from_utf8(output.stdout).ok()?;
    let executable = printed.trim();
    if !output.status.success() || executable.is_empty() {
        return None;
    }
    std::fs::canonicalize(executable).ok()
}

/// The first executable file named `program` in `PATH`.
pub(crate) fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(Utf8PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "sarge-venv-key-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            let path = Utf8PathBuf::try_from(std::env::temp_dir().join(name)).unwrap();
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Fixture {
        dir: TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = TempDir::new();
            let root = &dir.0;
            std::fs::create_dir(root.join("dist")).unwrap();
            std::fs::write(root.join("dist/a-1.0-py3-none-any.whl"), "wheel a").unwrap();
            std::fs::write(root.join("dist/b-2.0-py3-none-any.whl"), "wheel b").unwrap();
            std::fs::write(root.join("requirements.txt"), "a\nb\n").unwrap();
            // The key never runs a binary interpreter (only `#!` wrappers),
            // so any file that is not a script stands in.
            std::fs::write(root.join("python-x"), "\x7fELF x").unwrap();
            std::fs::write(root.join("python-y"), "\x7fELF y").unwrap();
            Fixture { dir }
        }

        fn path(&self, name: &str) -> Utf8PathBuf {
            self.dir.0.join(name)
        }

        fn key_with(&self, python: &str, installer: &Installer) -> EnvKey {
            let python = self.path(python);
            let requirements = self.path("requirements.txt");
            let dist = self.path("dist");
            let spec = EnvironmentSpec {
                python: &python,
                requirements: &requirements,
                dist: &dist,
            };
            compute(&spec, installer).unwrap().0
        }

        fn key(&self) -> EnvKey {
            self.key_with("python-x", &Installer::Pip)
        }
    }

    #[test]
    fn key_is_stable_when_nothing_changes() {
        let fixture = Fixture::new();
        assert_eq!(fixture.key(), fixture.key());
        assert_eq!(fixture.key().as_str().len(), 64);
    }

    #[test]
    fn key_changes_when_requirements_bytes_change() {
        let fixture = Fixture::new();
        let before = fixture.key();
        std::fs::write(fixture.path("requirements.txt"), "a\nb\n\n").unwrap();
        assert_ne!(before, fixture.key());
    }

    #[test]
    fn key_changes_when_wheel_is_replaced_under_same_name_with_same_size_and_mtime() {
        let fixture = Fixture::new();
        let wheel = fixture.path("dist/a-1.0-py3-none-any.whl");
        let mtime = std::fs::metadata(&wheel).unwrap().modified().unwrap();
        let before = fixture.key();

        // Rename over the old file, as a sync tool would; the new inode
        // exists while the old one still does, so the numbers must differ.
        let staged = fixture.path("staged.whl");
        std::fs::write(&staged, "wheel A").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&staged, &wheel).unwrap();
        let meta = std::fs::metadata(&wheel).unwrap();
        assert_eq!(meta.len(), 7);
        assert_eq!(meta.modified().unwrap(), mtime);

        assert_ne!(before, fixture.key());
    }

    #[test]
    fn key_changes_when_an_included_file_changes_and_not_for_a_file_without_includes() {
        let fixture = Fixture::new();
        // The key of a file without includes is what it always was: the
        // SHA-256 of these fields, computed before includes were hashed.
        let plain = fixture.key();
        std::fs::write(fixture.path("requirements.txt"), "a\n-r more.txt\n").unwrap();
        std::fs::write(fixture.path("more.txt"), "b\n").unwrap();
        let with_include = fixture.key();
        assert_ne!(plain, with_include);
        std::fs::write(fixture.path("more.txt"), "b==2.0\n").unwrap();
        assert_ne!(with_include, fixture.key());
        std::fs::write(fixture.path("requirements.txt"), "a\nb\n").unwrap();
        assert_eq!(plain, fixture.key());
    }

    #[test]
    fn nothing_outside_the_app_is_read_for_the_key() {
        let fixture = Fixture::new();
        std::fs::write(fixture.path("requirements.txt"), "-r /etc/passwd\n").unwrap();
        let python = fixture.path("python-x");
        let requirements = fixture.path("requirements.txt");
        let dist = fixture.path("dist");
        let spec = EnvironmentSpec {
            python: &python,
            requirements: &requirements,
            dist: &dist,
        };
        let err = compute(&spec, &Installer::Pip).unwrap_err();
        assert!(
            matches!(&err, Error::RequirementsLine { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn key_changes_when_a_wheel_is_added() {
        let fixture = Fixture::new();
        let before = fixture.key();
        std::fs::write(fixture.path("dist/c-1.0-py3-none-any.whl"), "c").unwrap();
        assert_ne!(before, fixture.key());
    }

    #[test]
    fn key_changes_when_interpreter_changes() {
        let fixture = Fixture::new();
        assert_ne!(
            fixture.key_with("python-x", &Installer::Pip),
            fixture.key_with("python-y", &Installer::Pip)
        );
    }

    #[test]
    fn key_changes_when_interpreter_is_upgraded_in_place() {
        let fixture = Fixture::new();
        let before = fixture.key();
        std::fs::write(fixture.path("python-x"), "\x7fELF x, version 3.12").unwrap();
        assert_ne!(before, fixture.key());
    }

    #[test]
    fn a_wrapper_script_resolves_to_the_interpreter_it_runs() {
        let fixture = Fixture::new();
        let real = resolve_python(Utf8Path::new("python3"))
            .expect("python3 is needed by these tests: run scripts/test, which installs it");
        let wrapper = fixture.path("shim-python");
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec '{real}' \"$@\"\n")).unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(resolve_python(&wrapper).unwrap(), real);
    }

    #[test]
    fn key_changes_with_installer_kind() {
        let fixture = Fixture::new();
        let uv = Installer::Uv {
            bin: Utf8PathBuf::from("/usr/bin/uv"),
        };
        assert_ne!(fixture.key(), fixture.key_with("python-x", &uv));
    }

    #[test]
    fn key_is_shared_between_symlink_and_target_interpreter() {
        let fixture = Fixture::new();
        std::os::unix::fs::symlink(fixture.path("python-x"), fixture.path("python-link")).unwrap();
        assert_eq!(
            fixture.key(),
            fixture.key_with("python-link", &Installer::Pip)
        );
    }

    #[test]
    fn missing_dist_is_a_dist_error() {
        let fixture = Fixture::new();
        std::fs::remove_dir_all(fixture.path("dist")).unwrap();
        let python = fixture.path("python-x");
        let requirements = fixture.path("requirements.txt");
        let dist = fixture.path("dist");
        let spec = EnvironmentSpec {
            python: &python,
            requirements: &requirements,
            dist: &dist,
        };
        let err = compute(&spec, &Installer::Pip).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("wheel folder {dist} not found or not readable")
        );
    }

    #[test]
    fn missing_interpreter_is_a_python_error() {
        let fixture = Fixture::new();
        let python = fixture.path("no-such-python");
        let requirements = fixture.path("requirements.txt");
        let dist = fixture.path("dist");
        let spec = EnvironmentSpec {
            python: &python,
            requirements: &requirements,
            dist: &dist,
        };
        let err = compute(&spec, &Installer::Pip).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("python interpreter {python} not found")
        );
    }

    #[test]
    fn bare_interpreter_name_not_on_path_is_a_python_error() {
        let err = resolve_python(Utf8Path::new("sarge-no-such-python-3.99")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "python interpreter sarge-no-such-python-3.99 not found"
        );
    }

    #[test]
    fn env_key_parses_only_64_lowercase_hex_digits() {
        let good = "0123456789abcdef".repeat(4);
        assert_eq!(good.parse::<EnvKey>().unwrap().to_string(), good);
        assert!("0123456789ABCDEF".repeat(4).parse::<EnvKey>().is_err());
        assert!("abc".parse::<EnvKey>().is_err());
        assert!(".locks".parse::<EnvKey>().is_err());
        assert_eq!(EnvKey::new(good.clone()), good.parse::<EnvKey>().unwrap());
    }
}
