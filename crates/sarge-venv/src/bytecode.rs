//! Compiling a new environment's Python files once, reusing what earlier
//! environments of the store compiled from the very same files.
//!
//! Python caches a module's compiled code in `__pycache__/NAME.TAG.pyc`.
//! By default that file is valid for a source of one size and mtime, and
//! the installer writes every file anew: a cache from another environment
//! would never match. Here every `.pyc` is written hash-based and
//! unchecked (PEP 552), valid for the source's content wherever it lies:
//! a package whose `RECORD` (every file with its sha256) is the same in an
//! earlier environment takes that environment's `.pyc` files as they are,
//! and only the rest is compiled. A redeploy that changes one pin compiles
//! one package, not all of them.
//!
//! Unchecked is safe because environments are sealed: read-only, and
//! fingerprinted so that one changed after its build is never run again
//! (see the store). Python then never reads a source to validate its cache,
//! which keeps every instance's start-up as fast as with timestamps.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};

/// PEP 552's flags word: bit 0 says the `.pyc` is hash-based, bit 1 that
/// the source is checked against it.
const HASH_BASED: u32 = 0b01;

/// What [`compile`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Compiled {
    /// `.pyc` files taken from earlier environments.
    pub(crate) reused: usize,
    /// Sources compiled here.
    pub(crate) compiled: usize,
}

/// Compiles every `.py` file of `venv`'s site-packages, taking the `.pyc`
/// of a file installed from the same package (same `RECORD`) from the
/// first of `donors` that has it.
pub(crate) fn compile(venv: &Utf8Path, donors: &[Utf8PathBuf]) -> Result<Compiled> {
    let Some((lib, site)) = site_packages(venv) else {
        return Ok(Compiled::default());
    };
    let Some(tag) = cache_tag(&lib) else {
        return Ok(Compiled::default());
    };
    let records = records(&site);
    let mut sources: Vec<Utf8PathBuf> = Vec::new();
    walk_sources(&site, &mut sources);
    let mut done = vec![false; sources.len()];
    let mut reused = 0;
    let index: BTreeMap<&Utf8Path, usize> = sources
        .iter()
        .enumerate()
        .map(|(position, path)| (path.as_path(), position))
        .collect();
    for donor in donors {
        let donor_site = donor.join("lib").join(&lib).join("site-packages");
        if !donor_site.is_dir() {
            continue;
        }
        for (dist_info, record) in &records {
            // Files outside site-packages (console scripts, whose `#!`
            // names the environment) differ between environments anyway.
            let same = std::fs::read(donor_site.join(dist_info).join("RECORD"))
                .is_ok_and(|theirs| inside_site(&theirs) == inside_site(record));
            if !same {
                continue;
            }
            for relative in record_sources(record) {
                let Some(&position) = index.get(relative.as_path()) else {
                    continue;
                };
                if done[position] {
                    continue;
                }
                let from = pyc_path(&donor_site, &relative, &tag);
                if is_hash_based(&from) && copy_pyc(&from, &pyc_path(&site, &relative, &tag)) {
                    done[position] = true;
                    reused += 1;
                }
            }
        }
    }
    let left: Vec<&Utf8PathBuf> = sources
        .iter()
        .zip(&done)
        .filter(|(_, done)| !**done)
        .map(|(path, _)| path)
        .collect();
    if !left.is_empty() {
        run_compiler(venv, &site, &left)?;
    }
    Ok(Compiled {
        reused,
        compiled: left.len(),
    })
}

/// `lib/pythonX.Y` (its name) and its site-packages.
fn site_packages(venv: &Utf8Path) -> Option<(String, Utf8PathBuf)> {
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("python") {
            let site = lib.join(&name).join("site-packages");
            if site.is_dir() {
                return Some((name, site));
            }
        }
    }
    None
}

/// CPython's `sys.implementation.cache_tag` for `pythonX.Y`: `cpython-XY`.
/// Another implementation's layout is not guessed: everything compiles.
fn cache_tag(lib: &str) -> Option<String> {
    let version = lib.strip_prefix("python")?;
    let (major, minor) = version.split_once('.')?;
    if major.parse::<u32>().is_err() || minor.parse::<u32>().is_err() {
        return None;
    }
    Some(format!("cpython-{major}{minor}"))
}

/// Each `NAME.dist-info` of `site` with its `RECORD`'s bytes.
fn records(site: &Utf8Path) -> BTreeMap<String, Vec<u8>> {
    let mut records = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(site) else {
        return records;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".dist-info") {
            if let Ok(record) = std::fs::read(site.join(&name).join("RECORD")) {
                records.insert(name, record);
            }
        }
    }
    records
}

/// The lines of a `RECORD` about files inside site-packages.
fn inside_site(record: &[u8]) -> Vec<&[u8]> {
    record
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.starts_with(b"../") && !line.starts_with(b"/"))
        .collect()
}

/// The `.py` files a `RECORD` lists inside site-packages.
fn record_sources(record: &[u8]) -> Vec<Utf8PathBuf> {
    String::from_utf8_lossy(record)
        .lines()
        .filter_map(|line| line.split(',').next())
        .filter(|path| path.ends_with(".py") && !path.starts_with("..") && !path.starts_with('/'))
        .map(Utf8PathBuf::from)
        .collect()
}

/// Every `.py` under `site`, relative to it.
fn walk_sources(site: &Utf8Path, out: &mut Vec<Utf8PathBuf>) {
    let mut stack = vec![Utf8PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(site.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && name != "__pycache__" {
                stack.push(relative.join(&name));
            } else if kind.is_file() && name.ends_with(".py") {
                out.push(relative.join(&name));
            }
        }
    }
    out.sort();
}

/// Where Python looks for the cache of `site/relative`.
fn pyc_path(site: &Utf8Path, relative: &Utf8Path, tag: &str) -> Utf8PathBuf {
    let stem = relative.file_stem().unwrap_or_default();
    let dir = relative.parent().unwrap_or(Utf8Path::new(""));
    site.join(dir)
        .join("__pycache__")
        .join(format!("{stem}.{tag}.pyc"))
}

/// Whether the `.pyc` at `path` is hash-based (valid for its source's
/// content, wherever the source lies).
fn is_hash_based(path: &Utf8Path) -> bool {
    let mut header = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .is_ok_and(|()| {
            let flags = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            flags & HASH_BASED != 0
        })
}

/// Copies a `.pyc`, making its `__pycache__`; false if it could not.
fn copy_pyc(from: &Utf8Path, to: &Utf8Path) -> bool {
    let Some(dir) = to.parent() else {
        return false;
    };
    std::fs::create_dir_all(dir).is_ok() && std::fs::copy(from, to).is_ok()
}

/// The compiler the environment's own Python runs: the files come on
/// stdin, one per line, and are spread over every CPU by one process pool
/// (compileall compiles the files it is given one by one, and starts a
/// pool per folder). A file that does not compile (Python 2 syntax in a
/// package's test folder, say) is left for Python to meet at import, if
/// ever, as an installer's `--compile-bytecode` does.
const COMPILER: &str = r#"
import os, sys, py_compile
from concurrent.futures import ProcessPoolExecutor
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
def one(path):
    try:
        py_compile.compile(path, doraise=True, invalidation_mode=mode)
    except py_compile.PyCompileError:
        pass
files = [line for line in sys.stdin.read().split("\n") if line]
if len(files) > 16 and (os.cpu_count() or 1) > 1:
    with ProcessPoolExecutor() as pool:
        list(pool.map(one, files, chunksize=8))
else:
    for path in files:
        one(path)
"#;

/// Compiles `sources` (relative to `site`) with the environment's own
/// Python, hash-based and unchecked.
fn run_compiler(venv: &Utf8Path, site: &Utf8Path, sources: &[&Utf8PathBuf]) -> Result<()> {
    let python = venv.join("bin/python");
    let mut child = Command::new(&python)
        // Isolated: no user site, no PYTHON* settings (one of them,
        // PYTHONDONTWRITEBYTECODE, would make it write nothing).
        .args(["-I", "-c", COMPILER])
        .current_dir(site)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: python.clone(),
            source,
        })?;
    let list: String = sources.iter().map(|path| format!("{path}\n")).collect();
    if let Some(mut stdin) = child.stdin.take() {
        // A compiler that stops reading says why below.
        let _ = stdin.write_all(list.as_bytes());
    }
    let output = child.wait_with_output().map_err(|source| Error::Spawn {
        program: python.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Compile {
        venv: venv.to_owned(),
        detail: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_tags_come_from_the_lib_folder() {
        assert_eq!(cache_tag("python3.11").as_deref(), Some("cpython-311"));
        assert_eq!(cache_tag("python3.9").as_deref(), Some("cpython-39"));
        assert_eq!(cache_tag("pypy3.10"), None);
        assert_eq!(cache_tag("python3"), None);
    }

    #[test]
    fn record_sources_keep_python_files_inside_site_packages() {
        let record = b"flask/__init__.py,sha256=abc,2210\nflask/py.typed,sha256=,0\n\
../../../bin/flask,sha256=x,200\nflask-3.1.0.dist-info/RECORD,,\n";
        assert_eq!(
            record_sources(record),
            [Utf8PathBuf::from("flask/__init__.py")]
        );
    }

    #[test]
    fn records_compare_inside_site_packages_only() {
        let ours = b"flask/app.py,sha256=a,1\n../../../bin/flask,sha256=x,373\n";
        let theirs = b"flask/app.py,sha256=a,1\n../../../bin/flask,sha256=y,373\n";
        assert_eq!(inside_site(ours), inside_site(theirs));
        let changed = b"flask/app.py,sha256=b,1\n../../../bin/flask,sha256=y,373\n";
        assert_ne!(inside_site(ours), inside_site(changed));
    }

    #[test]
    fn pyc_paths_are_where_python_looks() {
        let site = Utf8Path::new("/v/lib/python3.11/site-packages");
        assert_eq!(
            pyc_path(site, Utf8Path::new("flask/app.py"), "cpython-311"),
            "/v/lib/python3.11/site-packages/flask/__pycache__/app.cpython-311.pyc"
        );
        assert_eq!(
            pyc_path(site, Utf8Path::new("six.py"), "cpython-311"),
            "/v/lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc"
        );
    }
}
