//! A minimal `--flag value` command-line parser for the benchmark binaries.
//!
//! The binaries take a handful of flags; this avoids a CLI dependency. A flag may repeat
//! (`--upstream A --upstream B`); `--flag=value` is accepted too.
//!
//! ```
//! use rampart_bench::args::Args;
//! let args = Args::parse(["--listen", "127.0.0.1:0", "--upstream=a", "--upstream", "b"].map(String::from)).unwrap();
//! let listen: std::net::SocketAddr = args.value_or("listen", "127.0.0.1:8080").unwrap();
//! assert_eq!(listen.port(), 0);
//! assert_eq!(args.all("upstream"), ["a", "b"]);
//! ```

use std::fmt;
use std::str::FromStr;

/// Parsed `--name value` pairs, in command-line order.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pairs: Vec<(String, String)>,
    switches: Vec<String>,
}

/// A command line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError(String);

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

/// Flags that take no value.
const SWITCHES: &[&str] = &["help", "quiet", "no-breaker", "no-fallback", "reuseport"];

impl Args {
    /// Parses `--name value`, `--name=value` and the known value-less switches.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ArgsError> {
        let mut out = Self::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(ArgsError(format!("unexpected argument {arg:?}")));
            };
            if let Some((n, v)) = name.split_once('=') {
                out.pairs.push((n.to_owned(), v.to_owned()));
            } else if SWITCHES.contains(&name) {
                out.switches.push(name.to_owned());
            } else {
                let value = it
                    .next()
                    .ok_or_else(|| ArgsError(format!("--{name} needs a value")))?;
                out.pairs.push((name.to_owned(), value));
            }
        }
        Ok(out)
    }

    /// Whether the value-less switch `--name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// The last value of `--name`, parsed, or `default` parsed when absent.
    pub fn value_or<T: FromStr>(&self, name: &str, default: &str) -> Result<T, ArgsError>
    where
        T::Err: fmt::Display,
    {
        let raw = self
            .pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(default, |(_, v)| v.as_str());
        raw.parse()
            .map_err(|e| ArgsError(format!("--{name} {raw:?}: {e}")))
    }

    /// Every value of `--name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}
