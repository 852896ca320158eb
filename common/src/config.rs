//! Layered configuration: typed defaults, then a TOML file, then environment variables.
//!
//! Every setting can be overridden from the environment: `PREFIX__SECTION__KEY=value` sets
//! `[section] key = value` (names lowercased; values parsed as TOML scalars, else taken as
//! strings). Secrets are never written inline in production: a secret setting is either a
//! string, `{ env = "NAME" }` or `{ file = "/path" }`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use wechat::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    let mut overrides: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    overrides.sort();
    for (key, value) in overrides {
        let path: Vec<String> = key[prefix.len()..].split("__").map(str::to_lowercase).collect();
        set_path(&mut table, &path, parse_scalar(&value)).map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
    }
    T::deserialize(Value::Table(table)).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty name")?;
    let mut current = table;
    for name in parents {
        let entry = current.entry(name.clone()).or_insert_with(|| Value::Table(Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("{name} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
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
        let sample: Sample = load_from(None, "APP", env(&[("APP__SECRET__ENV", "FISCALBILL_TEST_UNSET_VAR")])).unwrap();
        assert!(matches!(sample.secret.resolve(), Err(ConfigError::MissingEnv(_))));
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
