//! `sessiond store export` and `sessiond store import`: a store's whole
//! content as JSON lines (the format is in [`crate::store::dump`]), to move
//! it to a store of another backend or another place.
//!
//! Both open the store `[store]` of the config names, as `serve` does.
//! Export writes a file only once it is complete. Import reads and checks
//! its whole input before it writes anything, refuses a store that already
//! holds anything unless `--merge`, and prints what it did on stderr.
//!
//! Exit codes: 0 done; 1 refused, or bad input (the config, a file, or a
//! line of the dump, named by its number), or some items not placed (out of
//! order); 2 the store failed.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use tempfile::NamedTempFile;

use crate::config::{Config, defaults};
use crate::session::now_ms;
use crate::store::StoreBackend;
use crate::store::dump::Kind;
use crate::store::dump::lines::{self, ExportError, ImportError};

#[derive(Debug, Subcommand)]
pub(super) enum StoreCommand {
    /// Write every session, end job, kv entry, audit record and audit
    /// idempotency key of the config's store as JSON lines.
    Export {
        /// The config file; the store it names is read.
        #[arg(long, short, default_value = defaults::CONFIG_PATH, env = "SESSIOND_CONFIG")]
        config: PathBuf,
        /// Where to write the dump (`-`: standard output).
        #[arg(long, short, default_value = "-")]
        out: PathBuf,
    },
    /// Write a dump's items into the config's store, keeping token hashes,
    /// versions, deadlines, end ids and audit ids.
    Import {
        /// The config file; the store it names is written.
        #[arg(long, short, default_value = defaults::CONFIG_PATH, env = "SESSIOND_CONFIG")]
        config: PathBuf,
        /// The dump to read (`-`: standard input).
        #[arg(long = "in", short, default_value = "-")]
        input: PathBuf,
        /// Import into a store that already holds data: an item the store
        /// has already (same session, end job, kv key, audit id or
        /// idempotency key) is kept as it is and counted as skipped.
        #[arg(long)]
        merge: bool,
    },
}

/// Why a command stopped, by exit code.
enum Failure {
    /// Refused, or bad input: exit 1.
    Input(String),
    /// The store failed: exit 2.
    Store(String),
}

impl Failure {
    fn input(e: impl std::fmt::Display) -> Self {
        Failure::Input(e.to_string())
    }

    fn store(e: impl std::fmt::Display) -> Self {
        Failure::Store(e.to_string())
    }
}

pub(super) fn run(cmd: StoreCommand) -> ExitCode {
    let result = match cmd {
        StoreCommand::Export { config, out } => export(&config, &out),
        StoreCommand::Import {
            config,
            input,
            merge,
        } => import(&config, &input, merge),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Store(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::store(format_args!("starting the async runtime: {e}")))
}

async fn open_store(config: &Config) -> Result<Arc<dyn StoreBackend>, Failure> {
    crate::server::build_store(config)
        .await
        .map_err(|e| Failure::store(format_args!("opening the store: {e:#}")))
}

/// A temporary file beside `out`, renamed to it once the dump is complete,
/// so that a failed export leaves no partial dump behind; none for `-`.
fn temp_beside(out: &Path) -> Result<Option<NamedTempFile>, Failure> {
    if is_stdio(out) {
        return Ok(None);
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    NamedTempFile::new_in(dir)
        .map(Some)
        .map_err(|e| Failure::input(format_args!("cannot write in {}: {e}", dir.display())))
}

fn export(config: &Path, out: &Path) -> Result<(), Failure> {
    let config = Config::load(config).map_err(Failure::input)?;
    let mut file = temp_beside(out)?;
    let stdout = io::stdout();
    let mut writer: Box<dyn Write> = match &mut file {
        Some(f) => Box::new(BufWriter::new(f.as_file_mut())),
        None => Box::new(BufWriter::new(stdout.lock())),
    };
    let tally = tokio_runtime()?.block_on(async {
        let store = open_store(&config).await?;
        lines::export(store.as_ref(), &mut *writer, now_ms())
            .await
            .map_err(|e| match e {
                ExportError::Store(e) => Failure::store(e),
                ExportError::Write(e) => Failure::input(format_args!("writing the dump: {e}")),
            })
    })?;
    drop(writer);
    if let Some(file) = file {
        file.as_file()
            .sync_all()
            .map_err(|e| Failure::input(format_args!("writing the dump: {e}")))?;
        file.persist(out).map_err(|e| {
            Failure::input(format_args!("cannot write {}: {}", out.display(), e.error))
        })?;
    }
    eprintln!("exported:");
    for line in tally.lines("exported") {
        eprintln!("  {line}");
    }
    Ok(())
}

/// The dump as a file that can be read twice: the file given, or standard
/// input copied to a temporary file.
fn open_input(input: &Path) -> Result<File, Failure> {
    if !is_stdio(input) {
        return File::open(input)
            .map_err(|e| Failure::input(format_args!("cannot read {}: {e}", input.display())));
    }
    let mut spool = tempfile::tempfile()
        .map_err(|e| Failure::input(format_args!("cannot buffer standard input: {e}")))?;
    io::copy(&mut io::stdin().lock(), &mut spool)
        .map_err(|e| Failure::input(format_args!("reading standard input: {e}")))?;
    Ok(spool)
}

fn rewind(file: &mut File) -> Result<BufReader<&mut File>, Failure> {
    file.rewind()
        .map_err(|e| Failure::input(format_args!("rereading the dump: {e}")))?;
    Ok(BufReader::new(file))
}

fn import_failure(e: ImportError) -> Failure {
    match e {
        ImportError::Store(e) => Failure::Store(format!(
            "{e} (what was written before stays: the same import with --merge finishes it)"
        )),
        ImportError::NotEmpty(_) => Failure::Input(format!(
            "{e}; import writes into an empty store only, unless --merge: then it keeps every \
             item the store holds and adds the others"
        )),
        other => Failure::input(other),
    }
}

fn import(config: &Path, input: &Path, merge: bool) -> Result<(), Failure> {
    let config = Config::load(config).map_err(Failure::input)?;
    let mut file = open_input(input)?;
    lines::check(&mut rewind(&mut file)?).map_err(import_failure)?;
    let report = tokio_runtime()?.block_on(async {
        let store = open_store(&config).await?;
        let mut reader = rewind(&mut file)?;
        lines::import(store.as_ref(), &mut reader, merge, now_ms())
            .await
            .map_err(import_failure)
    })?;
    eprintln!("imported:");
    for line in report.tally.lines("written") {
        eprintln!("  {line}");
    }
    let misplaced: u64 = Kind::ALL
        .iter()
        .map(|&k| report.tally.get(k).out_of_order)
        .sum();
    if misplaced == 0 {
        return Ok(());
    }
    for m in &report.misplaced {
        eprintln!(
            "  line {}: {} {} of tenant {:?} is not after the last id of the store's stream",
            m.line,
            m.kind.as_str(),
            m.id,
            m.tenant
        );
    }
    Err(Failure::Input(format!(
        "{misplaced} end jobs or audit records were not written: a stream only grows at its \
         end, and the store's streams have moved past their ids (import into a tenant the \
         store never held keeps them all)"
    )))
}
