//! Renderers for supervisord's own config file and for one `[program:NAME]`
//! include file.
//!
//! supervisord reads these files with Python's `configparser` and then runs
//! every value through `%`-interpolation, so a value only survives the trip
//! if it is written with those two parsers in mind:
//! - `%` is doubled (`stdout_logfile` is interpolated twice, so there it is
//!   quadrupled);
//! - a `;` or `#` right after whitespace starts an inline comment, so such a
//!   value is rejected (paths) or quoted apart (command arguments);
//! - leading and trailing whitespace is stripped, so it is rejected in paths;
//! - a newline or carriage return would end the value, so it is rejected;
//! - the literal text `%(here)s` is replaced before interpolation, so it is
//!   rejected.

use camino::Utf8PathBuf;

use crate::error::{Error, Result};

/// Longest program name sarge accepts; names end up in file names and logs
/// (supervisord itself sets no limit). sarge's program names are instance
/// ids, `PROCESS-xxxxxx`: at most 47 characters under sarge-config's
/// 40-character process-name rule, which leaves room for a longer suffix.
const MAX_PROGRAM_NAME_LEN: usize = 64;

/// The settings sarge controls in supervisord's main config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupervisordConfig {
    /// The control socket (`[unix_http_server] file`), created with mode 0700.
    pub socket: Utf8PathBuf,
    /// Where supervisord writes its pid.
    pub pidfile: Utf8PathBuf,
    /// supervisord's own log file.
    pub logfile: Utf8PathBuf,
    /// Where supervisord puts log files it names itself (`childlogdir`).
    pub child_log_dir: Utf8PathBuf,
    /// Glob of program files to include, e.g. `/home/etc/supervisor.d/*.conf`.
    /// Must not contain whitespace: supervisord splits this value on it.
    pub include_glob: Utf8PathBuf,
    /// supervisord's working directory.
    pub directory: Utf8PathBuf,
}

impl SupervisordConfig {
    /// Renders the whole `supervisord.conf`.
    ///
    /// supervisord daemonizes (`nodaemon=false`) and rotates its own log at
    /// 10MB keeping 5 backups. Its umask is 077 (supervisord's default is
    /// 022): the logs it creates hold whatever the apps print, secrets
    /// included, and the programs it starts inherit the umask, so what they
    /// write is the owner's alone too.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] if a path cannot be written faithfully (see the
    /// module rules: newlines, `;`/`#` after whitespace, surrounding
    /// whitespace, `%(here)s`, or whitespace in `include_glob`).
    pub fn render(&self) -> Result<String> {
        let socket = config_path("unix_http_server file", &self.socket)?;
        let logfile = config_path("supervisord logfile", &self.logfile)?;
        let pidfile = config_path("supervisord pidfile", &self.pidfile)?;
        let child_log_dir = config_path("supervisord childlogdir", &self.child_log_dir)?;
        let directory = config_path("supervisord directory", &self.directory)?;
        let include = config_path("include files", &self.include_glob)?;
        if self.include_glob.as_str().chars().any(python_isspace) {
            return Err(invalid_value(
                "include files",
                self.include_glob.as_str(),
                "supervisord splits the include list on whitespace",
            ));
        }
        Ok(format!(
            "; Written by sarge; it is rewritten on every change, edit sarge's settings instead.\n\
             \n\
             [unix_http_server]\n\
             file={socket}\n\
             chmod=0700\n\
             \n\
             [supervisord]\n\
             logfile={logfile}\n\
             logfile_maxbytes=10MB\n\
             logfile_backups=5\n\
             pidfile={pidfile}\n\
             childlogdir={child_log_dir}\n\
             directory={directory}\n\
             umask=077\n\
             nodaemon=false\n\
             \n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface\n\
             \n\
             [supervisorctl]\n\
             serverurl=unix://{socket}\n\
             \n\
             [include]\n\
             files={include}\n"
        ))
    }
}

/// One process that supervisord runs, rendered as a `[program:NAME]` section.
///
/// There is deliberately no environment field: supervisord's `environment=`
/// parser mangles `%`, `;`, `#` and quotes, so the command should set its own
/// environment (e.g. through a wrapper script).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Program {
    /// Program name; see [`validate_program_name`].
    pub name: String,
    /// The argv to run; the first element is the executable.
    pub command: Vec<String>,
    /// Working directory of the process.
    pub directory: Utf8PathBuf,
    /// Log file for stdout; stderr is redirected into it. It rotates at
    /// 10 MB, keeping 3 old files (`NAME.log.1` to `.3`).
    pub log_file: Utf8PathBuf,
    /// Start when supervisord starts or the group is added.
    pub autostart: bool,
    /// Restart whenever the process exits.
    pub autorestart: bool,
    /// Seconds the process must stay up to count as started.
    pub start_secs: u32,
    /// Failed start attempts before giving up (state `FATAL`).
    pub start_retries: u32,
    /// Seconds to wait after the stop signal before SIGKILL.
    pub stop_wait_secs: u32,
    /// Signal and kill the whole process group, not just the direct child.
    pub stop_as_group: bool,
    /// Size at which its log rotates (`stdout_logfile_maxbytes`): set
    /// rather than left to supervisord's default of 50 MB x 10 backups.
    pub log_max_bytes: u64,
    /// Rotated log files kept (`stdout_logfile_backups`).
    pub log_backups: u32,
}

impl Program {
    /// Renders one `[program:NAME]` section, meant to be the whole content of
    /// an included file.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProgramName`] for a bad name, [`Error::InvalidValue`]
    /// for an empty command or a value supervisord would alter (see the
    /// module rules).
    pub fn render(&self) -> Result<String> {
        validate_program_name(&self.name)?;
        let name = &self.name;
        let command = render_command(&format!("program:{name} command"), &self.command)?;
        let directory = config_path(&format!("program:{name} directory"), &self.directory)?;
        let log_key = format!("program:{name} stdout_logfile");
        // supervisord interpolates stdout_logfile twice (once on read, once
        // more for process_num), so the escaped text is escaped again.
        let log_file = escape_percent(&config_path(&log_key, &self.log_file)?);
        Ok(format!(
            "[program:{name}]\n\
             command={command}\n\
             directory={directory}\n\
             stdout_logfile={log_file}\n\
             stdout_logfile_maxbytes={log_max_bytes}\n\
             stdout_logfile_backups={log_backups}\n\
             redirect_stderr=true\n\
             autostart={autostart}\n\
             autorestart={autorestart}\n\
             startsecs={start_secs}\n\
             startretries={start_retries}\n\
             stopwaitsecs={stop_wait_secs}\n\
             stopasgroup={stop_as_group}\n\
             killasgroup={stop_as_group}\n",
            log_max_bytes = self.log_max_bytes,
            log_backups = self.log_backups,
            autostart = self.autostart,
            autorestart = self.autorestart,
            start_secs = self.start_secs,
            start_retries = self.start_retries,
            stop_wait_secs = self.stop_wait_secs,
            stop_as_group = self.stop_as_group,
        ))
    }
}

/// Checks that `name` can be a supervisord program name:
/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 characters.
///
/// # Errors
///
/// [`Error::InvalidProgramName`] naming the name and the rule it broke.
pub fn validate_program_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidProgramName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.chars().next() else {
        return invalid("it is empty");
    };
    if name.len() > MAX_PROGRAM_NAME_LEN {
        return invalid("it is longer than 64 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return invalid("it must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return invalid("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

fn invalid_value(key: &str, value: &str, reason: &'static str) -> Error {
    Error::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

/// Python's `str.isspace`, which is what configparser uses to decide whether
/// a `;` or `#` starts an inline comment and what `strip()` removes.
fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Rejects text that configparser or the `%(here)s` pre-pass would change,
/// whatever quoting is applied afterwards.
fn check_unmangled(key: &str, value: &str) -> Result<()> {
    if value.contains(['\n', '\r']) {
        return Err(invalid_value(key, value, "it contains a line break"));
    }
    if value.contains('\0') {
        return Err(invalid_value(key, value, "it contains a NUL byte"));
    }
    if value.contains("%(here)s") {
        return Err(invalid_value(
            key,
            value,
            "supervisord replaces %(here)s even when escaped",
        ));
    }
    Ok(())
}

/// Validates a path value written bare (no quoting is possible there) and
/// returns it `%`-escaped.
fn config_path(key: &str, path: &Utf8PathBuf) -> Result<String> {
    let value = path.as_str();
    check_unmangled(key, value)?;
    if value.is_empty() {
        return Err(invalid_value(key, value, "it is empty"));
    }
    if value.starts_with(python_isspace) || value.ends_with(python_isspace) {
        return Err(invalid_value(
            key,
            value,
            "supervisord strips leading and trailing whitespace",
        ));
    }
    let mut previous = None;
    for c in value.chars() {
        if matches!(c, ';' | '#') && previous.is_some_and(python_isspace) {
            return Err(invalid_value(
                key,
                value,
                "a ';' or '#' after whitespace starts a comment in supervisord's parser",
            ));
        }
        previous = Some(c);
    }
    Ok(escape_percent(value))
}

fn escape_percent(value: &str) -> String {
    value.replace('%', "%%")
}

/// Joins argv so that supervisord's `%`-interpolation followed by
/// `shlex.split` gives back exactly `argv`.
fn render_command(key: &str, argv: &[String]) -> Result<String> {
    if argv.is_empty() {
        return Err(invalid_value(key, "", "the command is empty"));
    }
    let mut line = String::new();
    for arg in argv {
        check_unmangled(key, arg)?;
        if !line.is_empty() {
            line.push(' ');
        }
        shell_quote_into(&mut line, arg);
    }
    Ok(escape_percent(&line))
}

fn shell_quote_into(line: &mut String, arg: &str) {
    let is_safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(is_safe) {
        line.push_str(arg);
        return;
    }
    line.push('\'');
    let mut previous = '\'';
    for c in arg.chars() {
        match c {
            // shlex has no escapes inside single quotes: close, add a
            // double-quoted quote, reopen.
            '\'' => line.push_str("'\"'\"'"),
            // Closing and reopening the quote ('') puts a quote character
            // between the whitespace and the comment marker, which
            // configparser then no longer sees as a comment.
            ';' | '#' if python_isspace(previous) => {
                line.push_str("''");
                line.push(c);
            }
            _ => line.push(c),
        }
        previous = c;
    }
    line.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisord_config() -> SupervisordConfig {
        SupervisordConfig {
            socket: "/home/run/supervisor.sock".into(),
            pidfile: "/home/run/supervisord.pid".into(),
            logfile: "/home/var/log/supervisord.log".into(),
            child_log_dir: "/home/var/log".into(),
            include_glob: "/home/etc/supervisor.d/*.conf".into(),
            directory: "/home".into(),
        }
    }

    fn web_program() -> Program {
        Program {
            name: "web".into(),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo hi; exec sleep 30".into(),
            ],
            directory: "/home/deploy/web".into(),
            log_file: "/home/var/log/web.log".into(),
            autostart: true,
            autorestart: true,
            start_secs: 2,
            start_retries: 3,
            stop_wait_secs: 10,
            stop_as_group: true,
            log_max_bytes: 10 * 1024 * 1024,
            log_backups: 3,
        }
    }

    #[test]
    fn supervisord_config_renders_all_sections() {
        let expected = "\
; Written by sarge; it is rewritten on every change, edit sarge's settings instead.

[unix_http_server]
file=/home/run/supervisor.sock
chmod=0700

[supervisord]
logfile=/home/var/log/supervisord.log
logfile_maxbytes=10MB
logfile_backups=5
pidfile=/home/run/supervisord.pid
childlogdir=/home/var/log
directory=/home
umask=077
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///home/run/supervisor.sock

[include]
files=/home/etc/supervisor.d/*.conf
";
        assert_eq!(supervisord_config().render().unwrap(), expected);
    }

    #[test]
    fn supervisord_config_escapes_percent_in_paths() {
        let config = SupervisordConfig {
            directory: "/srv/100% sure".into(),
            ..supervisord_config()
        };
        assert!(config
            .render()
            .unwrap()
            .contains("\ndirectory=/srv/100%% sure\n"));
    }

    #[test]
    fn supervisord_config_rejects_whitespace_in_include_glob() {
        let config = SupervisordConfig {
            include_glob: "/home/my etc/*.conf".into(),
            ..supervisord_config()
        };
        let err = config.render().unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot write include files = \"/home/my etc/*.conf\" into a supervisord config: \
             supervisord splits the include list on whitespace"
        );
    }

    #[test]
    fn supervisord_config_rejects_newline_in_socket() {
        let config = SupervisordConfig {
            socket: "/home/run/a\nb.sock".into(),
            ..supervisord_config()
        };
        let err = config.render().unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot write unix_http_server file = \"/home/run/a\\nb.sock\" into a supervisord \
             config: it contains a line break"
        );
    }

    #[test]
    fn program_renders_one_section() {
        let expected = "\
[program:web]
command=/bin/sh -c 'echo hi; exec sleep 30'
directory=/home/deploy/web
stdout_logfile=/home/var/log/web.log
stdout_logfile_maxbytes=10485760
stdout_logfile_backups=3
redirect_stderr=true
autostart=true
autorestart=true
startsecs=2
startretries=3
stopwaitsecs=10
stopasgroup=true
killasgroup=true
";
        assert_eq!(web_program().render().unwrap(), expected);
    }

    #[test]
    fn program_escapes_percent_once_in_paths_and_twice_in_log_file() {
        let program = Program {
            name: "odd".into(),
            command: vec!["printf".into(), "%s\\n".into(), "100%".into()],
            directory: "/srv/100% sure".into(),
            log_file: "/var/log/100% sure.log".into(),
            autostart: false,
            autorestart: false,
            start_secs: 0,
            start_retries: 0,
            stop_wait_secs: 1,
            stop_as_group: false,
            log_max_bytes: 10 * 1024 * 1024,
            log_backups: 3,
        };
        let expected = "\
[program:odd]
command=printf '%%s\\n' 100%%
directory=/srv/100%% sure
stdout_logfile=/var/log/100%%%% sure.log
stdout_logfile_maxbytes=10485760
stdout_logfile_backups=3
redirect_stderr=true
autostart=false
autorestart=false
startsecs=0
startretries=0
stopwaitsecs=1
stopasgroup=false
killasgroup=false
";
        assert_eq!(program.render().unwrap(), expected);
    }

    #[test]
    fn command_quoting_survives_comments_quotes_and_empty_args() {
        let argv: Vec<String> = ["/bin/echo", "a ;b", "#c", "it's", "", "tab\t#x", "plain"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            render_command("k", &argv).unwrap(),
            r#"/bin/echo 'a '';b' '#c' 'it'"'"'s' '' 'tab	''#x' plain"#
        );
    }

    #[test]
    fn command_rejects_empty_argv_and_newlines() {
        assert_eq!(
            render_command("program:web command", &[]).unwrap_err().to_string(),
            "cannot write program:web command = \"\" into a supervisord config: the command is empty"
        );
        let err = render_command("k", &["a\rb".into()]).unwrap_err();
        assert!(
            err.to_string().ends_with("it contains a line break"),
            "{err}"
        );
    }

    #[test]
    fn paths_reject_comment_markers_after_whitespace_and_here() {
        for (path, reason) in [
            (
                "/srv/a ;b",
                "a ';' or '#' after whitespace starts a comment",
            ),
            (
                "/srv/a\u{a0}#b",
                "a ';' or '#' after whitespace starts a comment",
            ),
            (
                "/srv/a ",
                "supervisord strips leading and trailing whitespace",
            ),
            (
                "/srv/%(here)s",
                "supervisord replaces %(here)s even when escaped",
            ),
            ("", "it is empty"),
        ] {
            let err = config_path("k", &path.into()).unwrap_err().to_string();
            assert!(err.contains(reason), "{path:?}: {err}");
        }
        assert_eq!(
            config_path("k", &"/srv/a;b#c".into()).unwrap(),
            "/srv/a;b#c"
        );
    }

    #[test]
    fn program_name_rules() {
        for good in ["web", "Web-1.2_x", "9", &"a".repeat(64)] {
            assert!(validate_program_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-web", ".web", "we b", "web:1", "wéb", &"a".repeat(65)] {
            assert!(validate_program_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_program_name("web:1").unwrap_err().to_string(),
            "invalid program name \"web:1\": only letters, digits, '_', '.' and '-' are allowed"
        );
    }

    /// The contract with sarge-core: every instance id a valid process name
    /// makes (`PROCESS-xxxxxx`, PROCESS at most 40 of `[A-Za-z0-9_.-]`,
    /// starting with a letter or digit) is a valid program name.
    #[test]
    fn program_names_take_every_instance_id_of_a_40_character_process() {
        let process = format!("W9_.-{}", "x".repeat(35));
        assert_eq!(process.len(), 40);
        let id = format!("{process}-0a1b2c");
        assert!(validate_program_name(&id).is_ok(), "{id}");
        assert_eq!(
            validate_program_name(&"a".repeat(65))
                .unwrap_err()
                .to_string(),
            format!(
                "invalid program name {:?}: it is longer than 64 characters",
                "a".repeat(65)
            )
        );
    }
}
