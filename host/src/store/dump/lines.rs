//! The JSON lines of a dump (the format is in [`super`]): [`export`] writes
//! a store's items, [`check`] reads an input through without writing
//! anything, [`import`] writes an input's items into a store.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{Imported, Item, Kind, PAGE_SIZE, StoreDump};
use crate::session::Millis;
use crate::store::StoreError;

/// The format's name, in the first line.
pub const FORMAT: &str = "sessiond-store";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// How many out-of-order items an [`ImportReport`] names; it counts them all.
const MISPLACED_NAMED: usize = 20;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// When the export started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_at: Option<Millis>,
}

/// What became of the items of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Exported, or written by an import.
    pub written: u64,
    /// Already in the target (import).
    pub exists: u64,
    /// Expired before the import.
    pub lapsed: u64,
    /// Not after the target stream's last id (import).
    pub out_of_order: u64,
}

/// [`Counts`] by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(BTreeMap<Kind, Counts>);

impl Tally {
    pub fn get(&self, kind: Kind) -> Counts {
        self.0.get(&kind).copied().unwrap_or_default()
    }

    fn add(&mut self, kind: Kind, outcome: Imported) {
        let c = self.0.entry(kind).or_default();
        match outcome {
            Imported::Written => c.written += 1,
            Imported::Exists => c.exists += 1,
            Imported::Lapsed => c.lapsed += 1,
            Imported::OutOfOrder => c.out_of_order += 1,
        }
    }

    /// One line per kind: `session: 3 written, 1 skipped (already there)`.
    pub fn lines(&self, written: &str) -> Vec<String> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let c = self.get(kind);
                let mut line = format!("{}: {} {written}", kind.as_str(), c.written);
                for (n, what) in [
                    (c.exists, "skipped (already there)"),
                    (c.lapsed, "lapsed"),
                    (c.out_of_order, "out of order (not written)"),
                ] {
                    if n > 0 {
                        line.push_str(&format!(", {n} {what}"));
                    }
                }
                line
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the dump: {0}")]
    Write(#[from] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line that is not what the format allows there.
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("reading the dump: {0}")]
    Read(io::Error),
    /// The target holds data for these tenants and merging was not asked for.
    #[error("the target store already holds data for {}", tenant_list(.0))]
    NotEmpty(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `tenant "a"`, `tenants "a", "b"`, or the first ten and how many more.
fn tenant_list(tenants: &[String]) -> String {
    const NAMED: usize = 10;
    let mut names: Vec<String> = tenants
        .iter()
        .take(NAMED)
        .map(|t| format!("{t:?}"))
        .collect();
    if tenants.len() > NAMED {
        names.push(format!("{} more", tenants.len() - NAMED));
    }
    match tenants.len() {
        1 => format!("tenant {}", names[0]),
        _ => format!("tenants {}", names.join(", ")),
    }
}

/// An end job or audit record an import could not place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misplaced {
    pub line: usize,
    pub kind: Kind,
    pub tenant: String,
    pub id: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub tally: Tally,
    /// The first of the items counted out of order.
    pub misplaced: Vec<Misplaced>,
}

fn write_line(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Writes the header and every item of `store`, tenant by tenant and kind by
/// kind, dropping the repeats a page may bring. Returns the items written
/// by kind.
pub async fn export(
    store: &dyn StoreDump,
    out: &mut dyn Write,
    now: Millis,
) -> Result<Tally, ExportError> {
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: Some(now),
    };
    write_line(out, &header)?;
    let mut tally = Tally::default();
    for tenant in store.dump_tenants().await? {
        for kind in Kind::ALL {
            let mut seen = HashSet::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = store.dump_page(&tenant, kind, cursor.as_deref()).await?;
                for item in &page.items {
                    if seen.insert(item.key()) {
                        write_line(out, item)?;
                        tally.add(kind, Imported::Written);
                    }
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
    }
    out.flush()?;
    Ok(tally)
}

/// The non-blank lines of an input with their numbers (from 1).
struct Lines<'a> {
    input: &'a mut dyn BufRead,
    number: usize,
    buf: String,
}

impl<'a> Lines<'a> {
    fn new(input: &'a mut dyn BufRead) -> Self {
        Lines {
            input,
            number: 0,
            buf: String::new(),
        }
    }

    fn next(&mut self) -> Result<Option<(usize, &str)>, ImportError> {
        loop {
            self.buf.clear();
            let read = self.input.read_line(&mut self.buf).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    line_error(self.number + 1, "not UTF-8 text")
                } else {
                    ImportError::Read(e)
                }
            })?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            if !self.buf.trim().is_empty() {
                return Ok(Some((self.number, self.buf.trim_end())));
            }
        }
    }

    /// Reads the first line and checks it is a header this build reads.
    fn header(&mut self) -> Result<Header, ImportError> {
        let Some((line, text)) = self.next()? else {
            return Err(line_error(
                1,
                "the input is empty: expected a dump's first line",
            ));
        };
        let header: Header = serde_json::from_str(text).map_err(|e| {
            line_error(
                line,
                format!("not the first line of a dump ({{\"format\": \"{FORMAT}\", ...}}): {e}"),
            )
        })?;
        if header.format != FORMAT {
            return Err(line_error(
                line,
                format!("format {:?} is not {FORMAT:?}", header.format),
            ));
        }
        if header.version != VERSION {
            return Err(line_error(
                line,
                format!(
                    "format version {} is not version {VERSION}, the one this sessiond reads",
                    header.version
                ),
            ));
        }
        Ok(header)
    }

    /// The next item, parsed and checked.
    fn item(&mut self) -> Result<Option<(usize, Item)>, ImportError> {
        let Some((line, text)) = self.next()? else {
            return Ok(None);
        };
        let item: Item = serde_json::from_str(text).map_err(|e| line_error(line, e.to_string()))?;
        item.check().map_err(|m| line_error(line, m))?;
        Ok(Some((line, item)))
    }
}

fn line_error(line: usize, message: impl Into<String>) -> ImportError {
    ImportError::Line {
        line,
        message: message.into(),
    }
}

/// Reads the whole input and checks every line, writing nothing; returns
/// the header and how many items of each kind it holds.
pub fn check(input: &mut dyn BufRead) -> Result<(Header, Tally), ImportError> {
    let mut lines = Lines::new(input);
    let header = lines.header()?;
    let mut tally = Tally::default();
    while let Some((_, item)) = lines.item()? {
        tally.add(item.kind(), Imported::Written);
    }
    Ok((header, tally))
}

/// Writes every item of the input into `store`, in steps of [`PAGE_SIZE`].
/// Unless `merge`, refuses a store that holds anything
/// ([`ImportError::NotEmpty`]) before writing. A bad line stops the import
/// there: [`check`] the input first to write nothing from a bad one.
pub async fn import(
    store: &dyn StoreDump,
    input: &mut dyn BufRead,
    merge: bool,
    now: Millis,
) -> Result<ImportReport, ImportError> {
    let mut lines = Lines::new(input);
    lines.header()?;
    if !merge {
        let tenants = store.dump_tenants().await?;
        if !tenants.is_empty() {
            return Err(ImportError::NotEmpty(tenants));
        }
    }
    let mut report = ImportReport::default();
    let mut batch = Batch::default();
    loop {
        let next = lines.item()?;
        let done = next.is_none();
        if let Some((line, item)) = next {
            batch.lines.push(line);
            batch.items.push(item);
        }
        if batch.items.len() >= PAGE_SIZE || (done && !batch.items.is_empty()) {
            batch.write(store, now, &mut report).await?;
        }
        if done {
            return Ok(report);
        }
    }
}

/// Items read and not yet written, with their line numbers.
#[derive(Default)]
struct Batch {
    lines: Vec<usize>,
    items: Vec<Item>,
}

impl Batch {
    async fn write(
        &mut self,
        store: &dyn StoreDump,
        now: Millis,
        report: &mut ImportReport,
    ) -> Result<(), ImportError> {
        let outcomes = store.import_items(&self.items, now).await?;
        if outcomes.len() != self.items.len() {
            return Err(StoreError::Backend(format!(
                "the store answered {} outcomes for {} items",
                outcomes.len(),
                self.items.len()
            ))
            .into());
        }
        for ((line, item), outcome) in self.lines.drain(..).zip(self.items.drain(..)).zip(outcomes)
        {
            report.tally.add(item.kind(), outcome);
            if outcome == Imported::OutOfOrder && report.misplaced.len() < MISPLACED_NAMED {
                report.misplaced.push(Misplaced {
                    line,
                    kind: item.kind(),
                    tenant: item.tenant().to_string(),
                    id: item.key(),
                });
            }
        }
        Ok(())
    }
}
