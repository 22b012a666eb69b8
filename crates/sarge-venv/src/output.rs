//! Reading installer output: which package was missing, and the lines
//! worth showing a person.

/// How many trailing lines of installer output an error carries; pip and uv
/// both put the cause in the last few lines, and a page of progress noise
/// would bury it.
pub(crate) const TAIL_LINES: usize = 15;

/// The last `count` non-blank lines of `output`, joined with newlines.
pub(crate) fn tail(output: &str, count: usize) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Phrases after which pip and uv print the requirement they could not
/// satisfy, in the order they are tried.
const MISSING_MARKERS: &[&str] = &[
    // pip
    "No matching distribution found for ",
    "Could not find a version that satisfies the requirement ",
    // uv: "Because X was not found in the provided package locations"
    // (or "in the cache") are caught by the suffix check below.
    "Because there is no version of ",
    "Because there are no versions of ",
    "Because only ",
];

/// The name of the package the installer could not find, when its output
/// says so plainly.
pub(crate) fn missing_package(output: &str) -> Option<String> {
    for marker in MISSING_MARKERS {
        for line in output.lines() {
            if let Some(rest) = line.split_once(marker).map(|(_, rest)| rest) {
                if let Some(name) = requirement_name(rest) {
                    return Some(name);
                }
            }
        }
    }
    for line in output.lines() {
        if let Some((before, _)) = line.split_once(" was not found in ") {
            if let Some((_, rest)) = before.rsplit_once("Because ") {
                if let Some(name) = requirement_name(rest) {
                    return Some(name);
                }
            }
        }
    }
    None
}

/// The project name at the start of a requirement such as
/// `not-there-pkg==2.0 (from demo-pkg)`.
fn requirement_name(requirement: &str) -> Option<String> {
    let name: String = requirement
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let name = name.trim_end_matches('.');
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from pip 23.2.1 (python 3.11.7) with --no-index --find-links.
    const PIP_MISSING_TOP_LEVEL: &str = "\
Looking in links: dist
Processing ./dist/demo_pkg-1.0-py3-none-any.whl (from -r bad.txt (line 1))
ERROR: Could not find a version that satisfies the requirement not-there-pkg==2.0 (from versions: none)
ERROR: No matching distribution found for not-there-pkg==2.0
";

    const PIP_MISSING_TRANSITIVE: &str = "\
Looking in links: dist2
Processing ./dist2/demo_pkg-1.0-py3-none-any.whl (from -r req.txt (line 1))
INFO: pip is looking at multiple versions of demo-pkg to determine which version is compatible with other requirements. This could take a while.
ERROR: Could not find a version that satisfies the requirement demo-dep (from demo-pkg) (from versions: none)
ERROR: No matching distribution found for demo-dep
";

    // Captured from uv 0.13.9 with --offline --no-index --find-links.
    const UV_MISSING_TOP_LEVEL: &str = "\
Using Python 3.11.7 environment at: uvenv
error: No solution found when resolving dependencies
  cause: Because not-there-pkg was not found in the provided package locations and you require not-there-pkg==2.0, we can conclude that your requirements are unsatisfiable.
";

    const UV_MISSING_TRANSITIVE: &str = "\
Using Python 3.11.7 environment at: uv2
error: No solution found when resolving dependencies
  cause: Because demo-dep was not found in the provided package locations and all versions of demo-pkg depend on demo-dep, we can conclude that all versions of demo-pkg cannot be used.
         And because you require demo-pkg, we can conclude that your requirements are unsatisfiable.
";

    const UV_WRONG_VERSION: &str = "\
Using Python 3.11.7 environment at: uvenv
error: No solution found when resolving dependencies
  cause: Because there is no version of demo-pkg==3.0 and you require demo-pkg==3.0, we can conclude that your requirements are unsatisfiable.
";

    const UV_ONLY_OLDER_VERSION: &str = "\
Using Python 3.11.7 environment at: uv2
error: No solution found when resolving dependencies
  cause: Because only demo-dep==1.0 is available and you require demo-dep>=2, we can conclude that your requirements are unsatisfiable.
";

    const UV_NOT_IN_CACHE: &str = "\
Using Python 3.11.7 environment at: uvenv
error: No solution found when resolving dependencies
  cause: Because six was not found in the cache and you require six, we can conclude that your requirements are unsatisfiable.

hint: Packages were unavailable because the network was disabled. When the network is disabled, registry packages may only be read from the cache.
";

    #[test]
    fn pip_missing_top_level_requirement_names_package() {
        assert_eq!(
            missing_package(PIP_MISSING_TOP_LEVEL).as_deref(),
            Some("not-there-pkg")
        );
    }

    #[test]
    fn pip_missing_transitive_dependency_names_dependency() {
        assert_eq!(
            missing_package(PIP_MISSING_TRANSITIVE).as_deref(),
            Some("demo-dep")
        );
    }

    #[test]
    fn uv_missing_top_level_requirement_names_package() {
        assert_eq!(
            missing_package(UV_MISSING_TOP_LEVEL).as_deref(),
            Some("not-there-pkg")
        );
    }

    #[test]
    fn uv_missing_transitive_dependency_names_dependency() {
        assert_eq!(
            missing_package(UV_MISSING_TRANSITIVE).as_deref(),
            Some("demo-dep")
        );
    }

    #[test]
    fn uv_missing_version_names_package() {
        assert_eq!(
            missing_package(UV_WRONG_VERSION).as_deref(),
            Some("demo-pkg")
        );
        assert_eq!(
            missing_package(UV_ONLY_OLDER_VERSION).as_deref(),
            Some("demo-dep")
        );
    }

    #[test]
    fn uv_not_in_cache_names_package() {
        assert_eq!(missing_package(UV_NOT_IN_CACHE).as_deref(), Some("six"));
    }

    #[test]
    fn unrelated_failure_names_no_package() {
        let output = "error: Failed to read `requirements.txt`\n  Caused by: No such file or directory (os error 2)\n";
        assert_eq!(missing_package(output), None);
    }

    #[test]
    fn tail_keeps_last_non_blank_lines() {
        let output = "one\n\ntwo\nthree  \n\nfour\n";
        assert_eq!(tail(output, 3), "two\nthree\nfour");
        assert_eq!(tail(output, 15), "one\ntwo\nthree\nfour");
        assert_eq!(tail("", 15), "");
    }
}
