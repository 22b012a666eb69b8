//! The `Procfile` format shared by honcho and foreman: `name: command`.
//!
//! Names are parsed into [`ProcessName`], the rule `sarge.yaml`'s
//! `port_map` and `healthcheck` keys follow too, so a Procfile cannot
//! declare a process that the config could not name, or the reverse.

use std::collections::BTreeMap;

use camino::Utf8Path;
use sarge_config::ProcessName;

use crate::error::{excerpt, Error, Result};

/// The process types an app declares, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Procfile {
    commands: BTreeMap<ProcessName, String>,
}

impl Procfile {
    /// Parses Procfile text. Blank lines and lines starting with `#` are
    /// ignored; every other line must be `name: command`. A UTF-8 byte
    /// order mark, which some Windows editors write, is skipped. `path`
    /// only names the file in errors.
    pub fn parse(text: &str, path: &Utf8Path) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut commands = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Lines and names are echoed cut short: a Procfile may be long.
            let malformed = |problem: String| Error::Procfile {
                path: path.to_owned(),
                line: line_number,
                problem,
            };
            let Some((name, command)) = line.split_once(':') else {
                return Err(malformed(format!(
                    "expected `name: command`, found {:?}",
                    excerpt(line)
                )));
            };
            let name: ProcessName = name
                .trim()
                .parse()
                .map_err(|error: sarge_config::Error| malformed(error.to_string()))?;
            let command = command.trim();
            if command.is_empty() {
                return Err(malformed(format!(
                    "process {:?} has no command",
                    name.as_str()
                )));
            }
            if commands.contains_key(&name) {
                return Err(malformed(format!(
                    "process {:?} is defined twice",
                    name.as_str()
                )));
            }
            commands.insert(name, command.to_owned());
        }
        Ok(Self { commands })
    }

    /// The command of process `name`.
    pub fn command(&self, name: &str) -> Option<&str> {
        self.commands.get(name).map(String::as_str)
    }

    /// The declared process names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(ProcessName::as_str)
    }

    /// The declared process names as the checked type, sorted.
    pub fn process_names(&self) -> impl Iterator<Item = &ProcessName> {
        self.commands.keys()
    }
}

/// Whether `name` can be a process name: it becomes part of a supervisord
/// program name, a haproxy proxy name and file names. Kept for callers
/// that only need a yes or no; [`ProcessName`]'s `FromStr` says why not.
pub fn is_valid_process_name(name: &str) -> bool {
    name.parse::<ProcessName>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Procfile> {
        Procfile::parse(text, Utf8Path::new("app/Procfile"))
    }

    #[test]
    fn reads_commands_and_skips_comments_and_blank_lines() {
        let procfile =
            parse("# the site\nweb: python app.py $PORT\n\n  worker:  python work.py  \n").unwrap();
        assert_eq!(procfile.command("web"), Some("python app.py $PORT"));
        assert_eq!(procfile.command("worker"), Some("python work.py"));
        assert_eq!(procfile.names().collect::<Vec<_>>(), ["web", "worker"]);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let procfile = parse("\u{feff}web: python app.py\n").unwrap();
        assert_eq!(procfile.names().collect::<Vec<_>>(), ["web"]);
    }

    #[test]
    fn long_lines_are_echoed_cut_short() {
        let line = "x".repeat(10_000);
        assert_eq!(
            parse(&line).unwrap_err().to_string(),
            format!(
                "app/Procfile line 1: expected `name: command`, found \"{}... (10000 bytes)\"",
                "x".repeat(200)
            )
        );
    }

    #[test]
    fn keeps_colons_inside_the_command() {
        let procfile = parse("web: gunicorn app:app -b 127.0.0.1:$PORT").unwrap();
        assert_eq!(
            procfile.command("web"),
            Some("gunicorn app:app -b 127.0.0.1:$PORT")
        );
    }

    #[test]
    fn line_without_colon_names_the_line() {
        let error = parse("web: ok\n\njust a command\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "app/Procfile line 3: expected `name: command`, found \"just a command\""
        );
    }

    #[test]
    fn rejects_bad_names_empty_commands_and_duplicates() {
        assert_eq!(
            parse("we b: x").unwrap_err().to_string(),
            format!(
                "app/Procfile line 1: \"we b\" is not a valid process name: it contains ' ' ({})",
                ProcessName::RULE
            )
        );
        assert_eq!(
            parse("web:   ").unwrap_err().to_string(),
            "app/Procfile line 1: process \"web\" has no command"
        );
        assert_eq!(
            parse("web: a\nweb: b").unwrap_err().to_string(),
            "app/Procfile line 2: process \"web\" is defined twice"
        );
    }

    #[test]
    fn process_names_safe_for_programs_and_files() {
        assert!(is_valid_process_name("web"));
        assert!(is_valid_process_name("worker_2.high-prio"));
        assert!(!is_valid_process_name(""));
        assert!(!is_valid_process_name("-web"));
        assert!(!is_valid_process_name("../web"));
        assert!(!is_valid_process_name("web:1"));
        assert!(!is_valid_process_name("web/1"));
    }

    #[test]
    fn names_follow_the_config_rule_of_at_most_40_characters() {
        let at_limit = "w".repeat(ProcessName::MAX_LEN);
        let procfile = parse(&format!("web: a\n{at_limit}: b\n")).unwrap();
        assert_eq!(procfile.command(&at_limit), Some("b"));
        assert!(is_valid_process_name(&at_limit));

        let over = "w".repeat(41);
        assert!(!is_valid_process_name(&over));
        assert_eq!(
            parse(&format!("web: a\n{over}: b\n")).unwrap_err().to_string(),
            format!(
                "app/Procfile line 2: {over:?} is not a valid process name: it is 41 characters long ({})",
                ProcessName::RULE
            )
        );
    }

    #[test]
    fn long_bad_names_are_echoed_cut_short() {
        let message = parse(&format!("{}: x", "x".repeat(10_000)))
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("app/Procfile line 1: \""), "{message}");
        assert!(message.contains("...\" (10000 bytes) is not"), "{message}");
    }
}
