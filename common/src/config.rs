//! Layered configuration: typed defaults, then a TOML file, then environment variables.
//!
//! Every setting can be overridden from the environment: `PREFIX__SECTION__KEY=value` sets
//! `[section] key = value` (names lowercased; values parsed as TOML scalars, else taken as
//! strings; an index reaches into an array of tables: `PREFIX__UNITS__0__APPID`), and an empty
//! value removes the setting, so that an optional section can be switched off
//! (`PREFIX__SERVER__TLS=`). Secrets are never written inline in production: a secret setting
//! is either a string, `{ env = "NAME" }` or `{ file = "/path" }`.
//!
//! Loading reports every problem at once, each with its key path: unset environment variables
//! and unreadable files of secrets and of `*_file` settings, then what does not fit the
//! settings' types.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use wechat::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Everything wrong with a configuration, each with its key path, found at once.
    #[error("the configuration has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<String>),
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("secret from environment variable {0}: not set")]
    MissingEnv(String),
    #[error("secret from file {path}: {source}")]
    SecretFile { path: PathBuf, source: std::io::Error },
}

/// Loads `T` from an optional TOML file overlaid with `PREFIX__...` environment variables.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    load_from(file, env_prefix, std::env::vars())
}

/// [`load`] with the environment given explicitly (for tests).
pub fn load_from<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            text.parse::<Table>().map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
        }
        None => Table::new(),
    };
    let prefix = format!("{env_prefix}__");
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut overrides: Vec<&(String, String)> = env.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    overrides.sort();
    let mut problems = Vec::new();
    for (key, value) in overrides {
        let path: Vec<String> = key[prefix.len()..].split("__").map(str::to_lowercase).collect();
        let value = (!value.is_empty()).then(|| parse_scalar(value));
        if let Err(e) = set_path(&mut table, &path, value) {
            problems.push(format!("{key}: {e}"));
        }
    }
    let env_set = |name: &str| env.iter().any(|(k, _)| k == name);
    external_problems(&Value::Table(table.clone()), "", &env_set, &mut problems);
    let config = match serde_path_to_error::deserialize::<_, T>(Value::Table(table)) {
        Ok(config) => Some(config),
        Err(error) => {
            let path = error.path().to_string();
            let at = if path == "." { String::new() } else { format!("{path}: ") };
            problems.push(format!("{at}{}", error.inner()));
            None
        }
    };
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            if file.is_none() {
                problems.push(format!(
                    "no configuration file was given: use --config FILE (see config/minimal-*.toml) or {env_prefix}__... variables"
                ));
            }
            Err(ConfigError::Problems(problems))
        }
    }
}

/// Sets (or with `None` removes) the setting at `path`. A number reaches into a list.
fn set_path(table: &mut Table, path: &[String], value: Option<Value>) -> Result<(), String> {
    let mut root = Value::Table(std::mem::take(table));
    let result = set_in(&mut root, path, value);
    if let Value::Table(back) = root {
        *table = back;
    }
    result
}

fn set_in(current: &mut Value, path: &[String], value: Option<Value>) -> Result<(), String> {
    let (name, rest) = path.split_first().ok_or("empty name")?;
    match current {
        Value::Table(table) if rest.is_empty() => {
            match value {
                Some(value) => table.insert(name.clone(), value),
                None => table.remove(name),
            };
            Ok(())
        }
        Value::Table(table) => {
            set_in(table.entry(name.clone()).or_insert_with(|| Value::Table(Table::new())), rest, value)
        }
        Value::Array(items) => {
            let index: usize = name.parse().map_err(|_| format!("{name}: a list is reached by an index"))?;
            let len = items.len();
            match (rest.is_empty(), value) {
                (true, None) if index < len => {
                    items.remove(index);
                    Ok(())
                }
                (true, Some(value)) if index < len => {
                    items[index] = value;
                    Ok(())
                }
                (false, value) if index < len => set_in(&mut items[index], rest, value),
                _ => Err(format!("the list has no element {index} (it has {len})")),
            }
        }
        _ => Err(format!("{name}: its parent is not a section")),
    }
}

/// Problems outside the configuration's text: secrets from unset environment variables or
/// unreadable files, and unreadable `*_file` settings (TLS certificates, logos).
fn external_problems(value: &Value, path: &str, env_set: &dyn Fn(&str) -> bool, problems: &mut Vec<String>) {
    let at = |name: &str| if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
    match value {
        Value::Table(table) if table.len() == 1 && table.contains_key("env") => {
            if let Some(Value::String(name)) = table.get("env")
                && !env_set(name)
            {
                problems.push(format!("{path}: environment variable {name} is not set"));
            }
        }
        Value::Table(table) if table.len() == 1 && table.contains_key("file") => {
            if let Some(Value::String(file)) = table.get("file")
                && let Err(error) = std::fs::metadata(file)
            {
                problems.push(format!("{path}: cannot read {file}: {error}"));
            }
        }
        Value::Table(table) => {
            for (name, value) in table {
                match value {
                    Value::String(file) if name.ends_with("_file") => {
                        if let Err(error) = std::fs::File::open(file) {
                            problems.push(format!("{}: cannot read {file}: {error}", at(name)));
                        }
                    }
                    _ => external_problems(value, &at(name), env_set, problems),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                external_problems(item, &format!("{path}[{index}]"), env_set, problems);
            }
        }
        _ => {}
    }
}

/// `8` → integer, `true` → boolean, `"x"` or `[1, 2]` → as TOML; anything else → string.
fn parse_scalar(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// What a service binary is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Check the configuration against WeChat, print a checklist, exit non-zero on a failure.
    Preflight,
}

/// A service's command line: `PROGRAM [serve|preflight] [--config FILE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub command: Command,
    pub config: Option<PathBuf>,
}

impl CommandLine {
    /// Parses the arguments after the program name; `Err` holds what to print (the usage for
    /// `--help`, or the mistake and the usage).
    pub fn parse(program: &str, env_prefix: &str, args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let usage = usage(program, env_prefix);
        let mut args = args.into_iter();
        let mut line = CommandLine { command: Command::Serve, config: None };
        let mut first = true;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "serve" if first => line.command = Command::Serve,
                "preflight" if first => line.command = Command::Preflight,
                "--config" => {
                    let path = args.next().ok_or_else(|| format!("--config needs a file\n\n{usage}"))?;
                    line.config = Some(PathBuf::from(path));
                }
                "-h" | "--help" | "help" => return Err(usage),
                other => return Err(format!("unknown argument {other}\n\n{usage}")),
            }
            first = false;
        }
        Ok(line)
    }
}

fn usage(program: &str, env_prefix: &str) -> String {
    format!(
        "usage: {program} [serve|preflight] [--config FILE]

commands:
  serve        run the service (the default)
  preflight    check the configuration against WeChat (credentials, IP whitelist, invoice
               permission, s_pappid, templates, callback keys, ...) without changes you would
               regret; print a checklist with the fix for each failure; exit 1 if any fails

options:
  --config FILE   a TOML configuration (see config/*.example.toml)
  -h, --help      this help

environment:
  {override:<32} overrides [section] key of the configuration
  {log:<32} log filter (default info)
  secrets are given in the configuration as {{ env = \"NAME\" }} or {{ file = \"/path\" }}",
        override = format!("{env_prefix}__SECTION__KEY=value"),
        log = "RUST_LOG=...",
    )
}

/// How a service logs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// JSON lines instead of human-readable logs.
    pub json: bool,
}

/// Where a secret comes from. Debug never shows an inline value.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSetting {
    /// The value itself (development; prefer env or file).
    Inline(Secret),
    /// An environment variable holding the value.
    Env { env: String },
    /// A file holding the value (trailing newline ignored), e.g. a mounted secret.
    File { file: PathBuf },
}

impl SecretSetting {
    pub fn resolve(&self) -> Result<Secret, ConfigError> {
        match self {
            SecretSetting::Inline(secret) => Ok(secret.clone()),
            SecretSetting::Env { env } => {
                std::env::var(env).map(Secret::new).map_err(|_| ConfigError::MissingEnv(env.clone()))
            }
            SecretSetting::File { file } => std::fs::read_to_string(file)
                .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
                .map_err(|source| ConfigError::SecretFile { path: file.clone(), source }),
        }
    }
}

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSetting::Inline(_) => f.write_str("<redacted>"),
            SecretSetting::Env { env } => write!(f, "env:{env}"),
            SecretSetting::File { file } => write!(f, "file:{}", file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        server: Server,
        secret: SecretSetting,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Server {
        port: u16,
        name: String,
        debug: bool,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("fiscalbill-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "secret = \"inline\"\n[server]\nport = 1\nname = \"file\"\n").unwrap();
        let sample: Sample = load_from(
            Some(&path),
            "APP",
            env(&[("APP__SERVER__PORT", "8080"), ("APP__SERVER__DEBUG", "true"), ("OTHER__SERVER__PORT", "9")]),
        )
        .unwrap();
        assert_eq!((sample.server.port, sample.server.name.as_str(), sample.server.debug), (8080, "file", true));
        assert_eq!(sample.secret.resolve().unwrap().expose(), "inline");
        assert_eq!(format!("{:?}", sample.secret), "<redacted>");
    }

    #[test]
    fn secrets_come_from_env_or_files() {
        let dir = std::env::temp_dir().join(format!("fiscalbill-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        let sample: Sample = load_from(None, "APP", env(&[("APP__SECRET__FILE", file.to_str().unwrap())])).unwrap();
        assert_eq!(sample.secret.resolve().unwrap().expose(), "from-file");
        // An unset variable is reported when the configuration loads, with its key path.
        let unset = load_from::<Sample>(None, "APP", env(&[("APP__SECRET__ENV", "FISCALBILL_TEST_UNSET_VAR")]));
        let problems = match unset {
            Err(ConfigError::Problems(problems)) => problems,
            other => panic!("{other:?}"),
        };
        assert_eq!(problems[0], "secret: environment variable FISCALBILL_TEST_UNSET_VAR is not set");
        let set = env(&[("APP__SECRET__ENV", "FISCALBILL_TEST_VAR"), ("FISCALBILL_TEST_VAR", "x")]);
        assert!(load_from::<Sample>(None, "APP", set).is_ok());
    }

    // The shape of a service's configuration; only some fields are looked at.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Service {
        secret: SecretSetting,
        #[serde(default)]
        tls: Option<Tls>,
        #[serde(default)]
        units: Vec<Unit>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tls {
        cert_file: PathBuf,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Unit {
        appid: String,
        secret: SecretSetting,
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_path() {
        let dir = std::env::temp_dir().join(format!("fiscalbill-problems-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        std::fs::write(
            &path,
            "secret = { env = \"UNSET_A\" }\n[tls]\ncert_file = \"/nonexistent/cert.pem\"\n\
             [[units]]\nappid = \"a\"\nsecret = { env = \"UNSET_B\" }\n[[units]]\nappid = 5\nsecret = \"x\"\n",
        )
        .unwrap();
        let Err(ConfigError::Problems(problems)) = load_from::<Service>(Some(&path), "APP", []) else { panic!() };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(problems[0], "secret: environment variable UNSET_A is not set");
        assert!(problems[1].starts_with("tls.cert_file: cannot read /nonexistent/cert.pem"), "{problems:?}");
        assert_eq!(problems[2], "units[0].secret: environment variable UNSET_B is not set");
        assert!(problems[3].starts_with("units[1].appid: invalid type"), "{problems:?}");
        let shown = ConfigError::Problems(problems).to_string();
        assert!(shown.starts_with("the configuration has 4 problem(s):\n  - secret:"), "{shown}");

        // An empty value switches an optional section off; an index reaches into a list.
        let env = env(&[
            ("APP__TLS", ""),
            ("APP__SECRET", "inline"),
            ("APP__UNITS__0__SECRET", "x"),
            ("APP__UNITS__1__APPID", "b"),
        ]);
        let fixed: Service = load_from(Some(&path), "APP", env).unwrap();
        assert!(fixed.tls.is_none());
        assert_eq!(fixed.units[1].appid, "b");
        // Without a file, a missing setting says how to give one.
        let Err(ConfigError::Problems(problems)) = load_from::<Service>(None, "APP", []) else { panic!() };
        assert!(
            problems[0].contains("missing field `secret`") && problems[1].contains("--config FILE"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_command_line_names_the_command_and_the_config_file() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parse = |list: &[&str]| CommandLine::parse("svc", "SVC", args(list));
        assert_eq!(parse(&[]), Ok(CommandLine { command: Command::Serve, config: None }));
        assert_eq!(parse(&["--config", "a.toml"]).unwrap().config, Some(PathBuf::from("a.toml")));
        let preflight = parse(&["preflight", "--config", "a.toml"]).unwrap();
        assert_eq!((preflight.command, preflight.config), (Command::Preflight, Some(PathBuf::from("a.toml"))));
        assert_eq!(parse(&["serve"]).unwrap().command, Command::Serve);
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["--verbose"]).unwrap_err().contains("usage: svc"));
        assert!(parse(&["--config", "a", "preflight"]).is_err(), "the command comes first");
        let help = parse(&["--help"]).unwrap_err();
        assert!(help.contains("preflight") && help.contains("SVC__SECTION__KEY"), "{help}");
    }

    #[test]
    fn unknown_settings_and_bad_values_are_errors() {
        let unknown = load_from::<Sample>(None, "APP", env(&[("APP__SECRET", "x"), ("APP__SERVER__PORTT", "1")]));
        assert!(unknown.unwrap_err().to_string().contains("portt"));
        let bad = load_from::<Sample>(None, "APP", env(&[("APP__SECRET", "x"), ("APP__SERVER__PORT", "high")]));
        assert!(bad.is_err());
    }
}
