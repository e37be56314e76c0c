//! ARCHITECTURE.md and the crates' READMEs are maps of the repository: every file or folder
//! they name in backticks must exist, so a file that moves or is split takes its map along.
//!
//! A path is a backticked token with a `/` that ends in `.rs`, `.md`, `.toml` or `.sh`, or ends
//! with `/`. It may be written from the repository's root or from a package's directory or its
//! `src/` (`src/balance/table.rs` under a crate's heading, `probe/http.rs` after that crate's
//! full path): it exists when it exists under one of them.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Paths in another project's source that a document names on purpose: hyper's HTTP/1
/// connection (the gateway's README, on why hyper's own header timeout is not used).
const ELSEWHERE: &[&str] = &["proto/h1/conn.rs"];

/// The workspace root: this package's parent directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace")
        .to_path_buf()
}

/// The directories a path may be written from: the root, `bench`, `tests`, every
/// `crates/*` and `examples/*` package, and the `src/` of each.
fn bases(root: &Path) -> Vec<PathBuf> {
    let mut packages = vec![root.join("bench"), root.join("tests")];
    for group in ["crates", "examples"] {
        let entries =
            std::fs::read_dir(root.join(group)).expect("the workspace has crates/ and examples/");
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                packages.push(path);
            }
        }
    }
    packages.sort();
    let mut bases = vec![root.to_path_buf()];
    for package in packages {
        bases.push(package.join("src"));
        bases.push(package);
    }
    bases
}

/// The backticked tokens of `text` that look like repository paths, with their line numbers.
/// Fenced code blocks are skipped; a span is taken within one line.
fn paths_named(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for token in line.split('`').skip(1).step_by(2) {
            if looks_like_path(token) {
                found.push((i + 1, token.to_owned()));
            }
        }
    }
    found
}

fn looks_like_path(token: &str) -> bool {
    let shaped = token.contains('/')
        && (token.ends_with('/')
            || [".rs", ".md", ".toml", ".sh"]
                .iter()
                .any(|ext| token.ends_with(ext)));
    // Not a URL, an absolute path outside the repository, a pattern or a command line.
    shaped
        && !token.contains("://")
        && !token.starts_with('/')
        && !token.contains(['*', '<', '>', ' ', '{'])
}

/// Every path `doc` names that exists under none of the bases, as `doc:line: path`.
fn missing_in(root: &Path, bases: &[PathBuf], doc: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(doc)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc.display()));
    let shown = doc.strip_prefix(root).unwrap_or(doc).display().to_string();
    paths_named(&text)
        .into_iter()
        .filter(|(_, path)| !ELSEWHERE.contains(&path.as_str()))
        .filter(|(_, path)| !bases.iter().any(|base| base.join(path).exists()))
        .map(|(line, path)| format!("{shown}:{line}: `{path}`"))
        .collect()
}

fn assert_all_exist(docs: &[PathBuf]) {
    let root = root();
    let bases = bases(&root);
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in docs {
        checked += paths_named(&std::fs::read_to_string(doc).unwrap_or_default()).len();
        missing.extend(missing_in(&root, &bases, doc));
    }
    assert!(checked > 0, "no path found in {docs:?}");
    assert!(
        missing.is_empty(),
        "{} path(s) named but not in the repository:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn architecture_names_only_existing_paths() {
    assert_all_exist(&[root().join("ARCHITECTURE.md")]);
}

#[test]
fn readmes_name_only_existing_paths() {
    let root = root();
    let mut readmes = vec![root.join("README.md"), root.join("bench/README.md")];
    for group in ["crates", "examples"] {
        for entry in std::fs::read_dir(root.join(group)).expect("the workspace has packages") {
            let readme = entry.expect("a directory entry").path().join("README.md");
            if readme.is_file() {
                readmes.push(readme);
            }
        }
    }
    readmes.sort();
    assert_all_exist(&readmes);
}

#[test]
fn path_tokens_are_recognised() {
    let text = "see `crates/a/src/lib.rs`, `probe/http.rs`, `src/balance/`, `bench/run.sh`\n\
                not `budget.rs`, `http://x/y.rs`, `/etc/x.toml`, `crates/*/README.md`, `a/b.txt`\n\
                ```\n`in/a/fence.rs`\n```\n";
    let found: Vec<String> = paths_named(text).into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        found,
        [
            "crates/a/src/lib.rs",
            "probe/http.rs",
            "src/balance/",
            "bench/run.sh"
        ]
    );
}
