//! Archive segments: settled history moved out of the live log into files
//! that check themselves (the format of one, writing, reading, checking).
//!
//! A segment holds records `first..=last` of the log exactly as the engine
//! stored them (their hashes and links unchanged: the segments and the live
//! log are one chain), with what finds them without a scan:
//!
//! ```text
//! header   "ELSEG\0\0\x01" | first seq (8) | hash of record first-1 (32)
//! records  for each seq: length (4) | record as stored
//! offsets  for each seq: where its length starts (8)
//! index    for each execution, by id: id (16) | first of its seqs in `seqs` (8) | how many (4)
//!          (a control entry's record — a pause, a resume — is in no execution's)
//! seqs     the executions' seqs, each execution's in order (8 each)
//! footer   last seq (8) | offsets at (8) | index at (8) | executions (8) | seqs at (8)
//!          | hash of record `last` (32) | BLAKE3 of every byte before it (32)
//! ```
//!
//! All numbers big-endian. A segment is written under a temporary name,
//! synced, renamed to `FIRST-LAST.segment` (20 digits each) and its
//! directory synced: one is complete or absent. The records' hashes make
//! each record's damage found at its seq; the footer's digest finds damage
//! anywhere else.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Hash};
use super::Mark;
use crate::error::{ErrorKind, StorageError};
use crate::execution::ExecutionId;

const MAGIC: &[u8; 8] = b"ELSEG\0\0\x01";
const HEADER: u64 = 8 + 8 + 32;
const FOOTER: u64 = 8 * 5 + 32 + 32;
const ENTRY: u64 = 16 + 8 + 4;
/// How segment files end.
const SUFFIX: &str = ".segment";

/// One segment, open for reading.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    /// Its first and last seq.
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// The hash of the record before its first, and of its last.
    pub(crate) prev: Hash,
    pub(crate) hash: Hash,
    offsets_at: u64,
    index_at: u64,
    executions: u64,
    seqs_at: u64,
    /// The file's length.
    len: u64,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> StorageError {
    move |e| StorageError::io(what, e)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The file name of the segment of `first..=last`.
pub(crate) fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}{SUFFIX}")
}

/// Writes the segment of `records` (seqs from `first` on, gap-free, as
/// stored, each with the execution its event belongs to, none for a
/// control entry) into `dir`;
/// `prev` is the hash of record `first - 1`. Returns its path once it is
/// durable under its final name.
///
/// # Errors
///
/// `Io`; `Corrupt` when the records do not follow on from `prev` (at the
/// seq).
pub(crate) fn write(
    dir: &Path,
    first: u64,
    prev: Hash,
    records: &mut dyn Iterator<Item = Result<(u64, Vec<u8>, Option<ExecutionId>), StorageError>>,
) -> Result<PathBuf, StorageError> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let partial = dir.join(format!(".{first:020}.partial"));
    let file =
        File::create(&partial).map_err(io(format!("cannot create {}", partial.display())))?;
    let mut out = Hashed {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        at: 0,
    };
    let failed = |e| io(format!("cannot write {}", partial.display()))(e);
    let (mut offsets, mut index) = (Vec::new(), BTreeMap::<ExecutionId, Vec<u64>>::new());
    let (mut expected, mut link) = (first, prev);
    out.put(MAGIC).map_err(failed)?;
    out.put(&first.to_be_bytes()).map_err(failed)?;
    out.put(&prev).map_err(failed)?;
    for item in records {
        let (seq, bytes, id) = item?;
        if seq != expected {
            return Err(StorageError::corrupt(
                expected,
                format!("record is missing (archiving jumps to seq {seq})"),
            ));
        }
        let rec = record::decode_stored(seq, &bytes)?;
        if rec.0 != link {
            return Err(record::broken_link(seq));
        }
        link = rec.1;
        offsets.push(out.at);
        if let Some(id) = id {
            index.entry(id).or_default().push(seq);
        }
        let len = u32::try_from(bytes.len())
            .map_err(|_| StorageError::corrupt(seq, "record is over 4 GiB"))?;
        out.put(&len.to_be_bytes()).map_err(failed)?;
        out.put(&bytes).map_err(failed)?;
        expected += 1;
    }
    let last = expected - 1;
    if last < first {
        return Err(StorageError::new(
            ErrorKind::Io,
            "an archive segment needs at least one record",
        ));
    }
    let offsets_at = out.at;
    for o in &offsets {
        out.put(&o.to_be_bytes()).map_err(failed)?;
    }
    let index_at = out.at;
    let mut n = 0u64;
    for (id, seqs) in &index {
        out.put(id.as_bytes()).map_err(failed)?;
        out.put(&n.to_be_bytes()).map_err(failed)?;
        out.put(&(seqs.len() as u32).to_be_bytes())
            .map_err(failed)?;
        n += seqs.len() as u64;
    }
    let seqs_at = out.at;
    for seqs in index.values() {
        for s in seqs {
            out.put(&s.to_be_bytes()).map_err(failed)?;
        }
    }
    for v in [last, offsets_at, index_at, index.len() as u64, seqs_at] {
        out.put(&v.to_be_bytes()).map_err(failed)?;
    }
    out.put(&link).map_err(failed)?;
    let digest = *out.hasher.finalize().as_bytes();
    out.inner.write_all(&digest).map_err(failed)?;
    let file = out.inner.into_inner().map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)?;
    drop(file);
    let path = dir.join(file_name(first, last));
    std::fs::rename(&partial, &path).map_err(io(format!("cannot rename {}", partial.display())))?;
    super::sled::sync_dir(dir)?;
    Ok(path)
}

/// A writer that hashes what it writes and counts it.
struct Hashed {
    inner: BufWriter<File>,
    hasher: blake3::Hasher,
    at: u64,
}

impl Hashed {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hasher.update(b);
        self.at += b.len() as u64;
        self.inner.write_all(b)
    }
}

impl Segment {
    /// Opens the segment at `path`: reads its header and footer (not its
    /// records; see [`Segment::check`]).
    ///
    /// # Errors
    ///
    /// `Io`; `Corrupt` when its header or footer is not one.
    pub(crate) fn open(path: &Path) -> Result<Segment, StorageError> {
        let file = File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(io(format!("cannot read {}", path.display())))?
            .len();
        let bad = |what: &str| {
            StorageError::new(
                ErrorKind::Corrupt,
                format!("archive segment {} {what}", path.display()),
            )
        };
        if len < HEADER + FOOTER {
            return Err(bad("is too short to be one"));
        }
        let mut head = [0u8; HEADER as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(io(format!("cannot read {}", path.display())))?;
        let mut foot = [0u8; FOOTER as usize];
        file.read_exact_at(&mut foot, len - FOOTER)
            .map_err(io(format!("cannot read {}", path.display())))?;
        if &head[..8] != MAGIC {
            return Err(bad("does not start as one"));
        }
        let (first, last) = (u64_at(&head, 8), u64_at(&foot, 0));
        let seg = Segment {
            path: path.to_owned(),
            file,
            first,
            last,
            prev: head[16..48].try_into().expect("32 bytes"),
            hash: foot[40..72].try_into().expect("32 bytes"),
            offsets_at: u64_at(&foot, 8),
            index_at: u64_at(&foot, 16),
            executions: u64_at(&foot, 24),
            seqs_at: u64_at(&foot, 32),
            len,
        };
        let records = last.checked_sub(first).map(|n| n + 1);
        let fits = records.is_some_and(|n| {
            first >= 1
                && seg.offsets_at >= HEADER
                && seg.index_at.checked_sub(seg.offsets_at) == n.checked_mul(8)
                && seg.seqs_at.checked_sub(seg.index_at) == seg.executions.checked_mul(ENTRY)
                // (A control entry's record is in no execution's seqs.)
                && (len - FOOTER)
                    .checked_sub(seg.seqs_at)
                    .is_some_and(|s| s % 8 == 0 && s / 8 <= n)
        });
        if !fits {
            return Err(bad("has a damaged header or footer"));
        }
        Ok(seg)
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut b = vec![0; len];
        self.file.read_exact_at(&mut b, at).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StorageError::new(
                    ErrorKind::Corrupt,
                    format!("archive segment {} ends early", self.path.display()),
                )
            } else {
                StorageError::io(format!("cannot read {}", self.path.display()), e)
            }
        })?;
        Ok(b)
    }

    /// Record `seq` as stored (`None` outside the segment).
    ///
    /// # Errors
    ///
    /// `Io`; `Corrupt` at `seq` when it cannot be read.
    pub(crate) fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StorageError> {
        if seq < self.first || seq > self.last {
            return Ok(None);
        }
        let damaged = |e: StorageError| at_seq_in(e, seq, &self.path);
        let at = u64_at(&self.read(self.offsets_at + (seq - self.first) * 8, 8)?, 0);
        if at < HEADER || at + 4 > self.offsets_at {
            return Err(damaged(StorageError::new(
                ErrorKind::Corrupt,
                "its offset is damaged",
            )));
        }
        let len = u32::from_be_bytes(self.read(at, 4)?.try_into().expect("4 bytes")) as u64;
        if at + 4 + len > self.offsets_at {
            return Err(damaged(StorageError::new(
                ErrorKind::Corrupt,
                "its length is damaged",
            )));
        }
        self.read(at + 4, len as usize).map(Some).map_err(damaged)
    }

    /// The seqs of execution `id`'s events in the segment (empty when it
    /// has none).
    ///
    /// # Errors
    ///
    /// `Io`, `Corrupt`.
    pub(crate) fn seqs_of(&self, id: &ExecutionId) -> Result<Vec<u64>, StorageError> {
        let (mut lo, mut hi) = (0u64, self.executions);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.read(self.index_at + mid * ENTRY, ENTRY as usize)?;
            match e[..16].cmp(id.as_bytes().as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let (from, n) = (
                        u64_at(&e, 16),
                        u32::from_be_bytes(e[24..28].try_into().expect("4 bytes")),
                    );
                    // A damaged entry must not ask for more than the file holds.
                    if from.saturating_add(u64::from(n)) > self.last - self.first + 1 {
                        return Err(StorageError::new(
                            ErrorKind::Corrupt,
                            format!(
                                "archive segment {} (seqs {} to {}) has a damaged index entry for {id}",
                                self.path.display(),
                                self.first,
                                self.last
                            ),
                        )
                        .at_seq(self.last));
                    }
                    let b = self.read(self.seqs_at + from * 8, n as usize * 8)?;
                    return Ok(b.chunks_exact(8).map(|c| u64_at(c, 0)).collect());
                }
            }
        }
        Ok(Vec::new())
    }

    /// The executions it indexes, in id order.
    ///
    /// # Errors
    ///
    /// `Io`, `Corrupt`.
    pub(crate) fn ids(&self) -> Result<Vec<ExecutionId>, StorageError> {
        let len = usize::try_from(self.executions * ENTRY).map_err(|_| {
            StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "archive segment {} has a damaged footer",
                    self.path.display()
                ),
            )
        })?;
        let index = self.read(self.index_at, len)?;
        Ok(index
            .chunks_exact(ENTRY as usize)
            .map(|e| ExecutionId::from_bytes(e[..16].try_into().expect("16 bytes")))
            .collect())
    }

    /// Its records in order, as stored, each read on its own.
    pub(crate) fn records(
        &self,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StorageError>> + '_ {
        (self.first..=self.last).map(|seq| {
            let bytes = self.record(seq)?.expect("a seq of the segment");
            Ok((seq, bytes))
        })
    }

    /// Checks the whole file: every record's hash and link from the
    /// segment's `prev` on, and its index, against `execution_of` (the
    /// execution of each record's event, read by the engine; none for a
    /// control entry), then the
    /// digest of everything. Damage in a record is reported at its seq.
    ///
    /// # Errors
    ///
    /// `Corrupt` (at the seq, naming the file), `Io`.
    pub(crate) fn check(
        &self,
        mut execution_of: impl FnMut(u64, &[u8]) -> Result<Option<ExecutionId>, StorageError>,
    ) -> Result<(), StorageError> {
        let mut link = self.prev;
        let mut index = BTreeMap::<ExecutionId, Vec<u64>>::new();
        for item in self.records() {
            let (seq, bytes) = item?;
            let checked = record::decode_stored(seq, &bytes).and_then(|(prev, hash)| {
                if prev != link {
                    return Err(record::broken_link(seq));
                }
                Ok(hash)
            });
            link = checked.map_err(|e| at_seq_in(e, seq, &self.path))?;
            let id = execution_of(seq, &bytes).map_err(|e| at_seq_in(e, seq, &self.path))?;
            if let Some(id) = id {
                index.entry(id).or_default().push(seq);
            }
        }
        let bad = |what: String| {
            StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "archive segment {} (seqs {} to {}) {what}",
                    self.path.display(),
                    self.first,
                    self.last
                ),
            )
            .at_seq(self.last)
        };
        if link != self.hash {
            return Err(bad("ends on another hash than its last record's".into()));
        }
        if index.len() as u64 != self.executions {
            return Err(bad(format!(
                "indexes {} executions; its records hold {}",
                self.executions,
                index.len()
            )));
        }
        for (id, seqs) in &index {
            if self.seqs_of(id)? != *seqs {
                return Err(bad(format!("has a damaged index entry for {id}")));
            }
        }
        // Everything else (offsets, index layout, footer) by the digest.
        let end = self.len - 32;
        let mut hasher = blake3::Hasher::new();
        let mut at = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        while at < end {
            let n = buf.len().min((end - at) as usize);
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(io(format!("cannot read {}", self.path.display())))?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let stored = self.read(end, 32)?;
        if hasher.finalize().as_bytes().as_slice() != stored.as_slice() {
            return Err(bad(
                "does not match its digest (damage outside its records)".into(),
            ));
        }
        Ok(())
    }
}

/// `e`, met at `seq` of the segment at `path`, naming both.
fn at_seq_in(e: StorageError, seq: u64, path: &Path) -> StorageError {
    if e.kind() == ErrorKind::Corrupt {
        e.context(format!("in archive segment {}", path.display()))
            .at_seq(seq)
    } else {
        e
    }
}

/// The segments in `dir`, in seq order (none when it does not exist):
/// each opened, or why it cannot be (a damaged header or footer is
/// reported at the first seq its file name gives).
///
/// # Errors
///
/// `Io` when the directory cannot be read.
pub(crate) fn segments(dir: &Path) -> Result<Vec<Result<Segment, StorageError>>, StorageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StorageError::io(
                format!("cannot read {}", dir.display()),
                e,
            ))
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("cannot read {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(SUFFIX) && !name.starts_with('.') {
            // Its first seq by its name, for the order and the report.
            let first = name
                .split('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let opened = Segment::open(&entry.path()).map_err(|e| match e.kind() {
                ErrorKind::Corrupt if first > 0 => e.at_seq(first),
                _ => e,
            });
            let at = opened.as_ref().map_or(first, |s| s.first);
            found.push((at, opened));
        }
    }
    found.sort_by_key(|(at, _)| *at);
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

/// Removes the segment at `path`, which was never part of the log.
///
/// # Errors
///
/// `Io`.
pub(crate) fn remove(path: &Path) -> Result<(), StorageError> {
    std::fs::remove_file(path).map_err(io(format!("cannot remove {}", path.display())))
}

/// Removes what a write cut short left in `dir` (files under a temporary
/// name).
///
/// # Errors
///
/// `Io`.
pub(crate) fn remove_partial(dir: &Path) -> Result<(), StorageError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".partial") {
            std::fs::remove_file(entry.path())
                .map_err(io(format!("cannot remove {}", entry.path().display())))?;
        }
    }
    Ok(())
}

/// An archive's directory and the segments that hold the log through its
/// base, in seq order: what an engine that archives keeps open.
pub(crate) struct Segments {
    pub(crate) dir: PathBuf,
    pub(crate) kept: Vec<Segment>,
    /// Segments past the base, until open has told whether each is this
    /// ledger's own that an archive pass did not commit ([`Segments::settle`]).
    past: Vec<Segment>,
    /// Why the archive cannot be read whole: a segment whose header or
    /// footer is damaged, or one that is not this ledger's. The live log
    /// works on; reads below the base and archive passes are refused.
    trouble: Option<StorageError>,
}

impl Segments {
    /// The segments in `dir`, after removing the temporary files a write
    /// cut short left: those through `base`, and those past it for
    /// [`Segments::settle`]. A segment that cannot be opened does not stop
    /// the ledger from opening: it is the archive's trouble, reported by
    /// every read of the archive.
    pub(crate) fn open(dir: &Path, base: Mark) -> Result<Segments, StorageError> {
        let dir = dir.to_owned();
        remove_partial(&dir)?;
        let (mut kept, mut past, mut trouble) = (Vec::new(), Vec::new(), None);
        for opened in segments(&dir)? {
            match opened {
                Ok(segment) if segment.first > base.0 => past.push(segment),
                Ok(segment) => kept.push(segment),
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(error = %e, "the archive has a damaged segment");
                    trouble.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Segments {
            dir,
            kept,
            past,
            trouble,
        })
    }

    /// Removes a segment past `base` that is this ledger's own, written by
    /// an archive pass that did not commit it: it follows on from the base,
    /// and its first record is `live`, the one the live log holds there
    /// (as stored). Any other (a restored older database beside a newer
    /// archive, another ledger's archive) is left where it is, and is the
    /// archive's trouble.
    pub(crate) fn settle(&mut self, base: Mark, live: Option<&[u8]>) -> Result<(), StorageError> {
        let (base, hash) = base;
        for segment in std::mem::take(&mut self.past) {
            let own = segment.first == base + 1
                && segment.prev == hash
                && live.is_some()
                && segment.record(base + 1)?.as_deref() == live;
            if own {
                tracing::info!(segment = %segment.path().display(), "removing a segment an archive pass did not commit");
                remove(segment.path())?;
            } else {
                let e = StorageError::corrupt(
                    base + 1,
                    format!(
                        "archive segment {} holds seqs {} to {}, past the live log's base (seq {base}), and is not one this ledger left uncommitted: move it out of {}",
                        segment.path().display(),
                        segment.first,
                        segment.last,
                        self.dir.display()
                    ),
                );
                tracing::warn!(error = %e, "the archive has a foreign segment");
                self.trouble.get_or_insert(e);
            }
        }
        Ok(())
    }

    /// Adds the segments through `base` that another process wrote into
    /// the directory since they were read, when the ones held do not reach
    /// it (a shared log's base moves in any process).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))] // the PostgreSQL engine's
    pub(crate) fn catch_up(&mut self, base: u64) -> Result<(), StorageError> {
        if self.trouble.is_some() || self.kept.last().map_or(0, |s| s.last) >= base {
            return Ok(());
        }
        let held: std::collections::HashSet<PathBuf> =
            self.kept.iter().map(|s| s.path().to_owned()).collect();
        for opened in segments(&self.dir)? {
            match opened {
                Ok(segment) if segment.first <= base && !held.contains(segment.path()) => {
                    self.kept.push(segment);
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(error = %e, "the archive has a damaged segment");
                    self.trouble.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.kept.sort_by_key(|s| s.first);
        Ok(())
    }

    /// Checks that the segments hold seqs 1 through `base`, one after
    /// another, and that none is damaged or foreign.
    pub(crate) fn cover(&self, base: u64) -> Result<(), StorageError> {
        if let Some(e) = &self.trouble {
            return Err(e.duplicate());
        }
        let mut next = 1;
        for s in &self.kept {
            if s.first != next {
                break;
            }
            next = s.last + 1;
        }
        // (Past the base while a segment is committed.)
        if next > base {
            return Ok(());
        }
        Err(StorageError::new(
            ErrorKind::Io,
            format!(
                "seqs 1 to {base} are archived, but the archive in {} holds {}: bring the archive back (or name where it is: `--archive DIR`)",
                self.dir.display(),
                match next - 1 {
                    0 => "none of them".to_owned(),
                    n => format!("seqs 1 to {n} only"),
                }
            ),
        ))
    }

    /// The segment holding `seq`.
    fn holding(&self, seq: u64) -> Option<&Segment> {
        let i = self.kept.partition_point(|s| s.last < seq);
        self.kept.get(i).filter(|s| s.first <= seq)
    }

    /// Record `seq` (at or below `base`) from the segments, as stored.
    pub(crate) fn record(&self, seq: u64, base: u64) -> Result<Option<Vec<u8>>, StorageError> {
        if self.holding(seq).is_none() {
            self.cover(base)?;
        }
        match self.holding(seq) {
            Some(segment) => segment.record(seq),
            None => Err(StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "seq {seq} is archived, but no segment in {} holds it",
                    self.dir.display()
                ),
            )
            .at_seq(seq)),
        }
    }

    /// The seqs of an archived execution's events (empty when none is):
    /// its segment's, and those of later segments (retention events that
    /// followed it). An error when the segments do not hold the whole
    /// archived prefix through `base` (the archive was moved): whether
    /// `id` is archived cannot be told then.
    pub(crate) fn seqs_of(&self, id: &ExecutionId, base: u64) -> Result<Vec<u64>, StorageError> {
        self.cover(base)?;
        let mut seqs = Vec::new();
        for segment in &self.kept {
            seqs.extend(segment.seqs_of(id)?);
        }
        Ok(seqs)
    }

    /// Opens the segment at `path`, which must follow on from `base`, and
    /// adds it: from then on it is read (call before the base moves to
    /// its last seq). Answers its last seq and hash.
    pub(crate) fn commit(&mut self, path: &Path, base: Mark) -> Result<Mark, StorageError> {
        let segment = Segment::open(path)?;
        if segment.first != base.0 + 1 || segment.prev != base.1 {
            return Err(StorageError::new(
                ErrorKind::Corrupt,
                format!(
                    "archive segment {} does not follow on from the log's base (seq {})",
                    path.display(),
                    base.0
                ),
            ));
        }
        let last = (segment.last, segment.hash);
        self.kept.push(segment);
        Ok(last)
    }
}
