//! A segment written whole by compaction or by the format upgrade: records go through a
//! buffer into a file under a temporary name, which is fsynced and renamed into place, with
//! its hint file, once complete.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::hint::{self, HintBuilder, HintEntry};
use crate::pacer::Pacer;
use crate::record::{self, FLAG_TOMBSTONE};
use crate::segment::{self, FORMAT_VERSION, FileKind, Segment};
use crate::vfs::{Dir, Open, VfsFile};

const BUFFER: usize = 1 << 20;

/// An output segment being written under its temporary name.
pub(crate) struct Output {
    id: u64,
    temp: PathBuf,
    file: Box<dyn VfsFile>,
    /// The file system (for removing the output if it is abandoned).
    dir: Dir,
    buf: Vec<u8>,
    /// Bytes of the segment so far (file and buffer).
    len: u64,
    hint: HintBuilder,
    /// Bytes handed to the OS since the last fdatasync.
    unsynced: u64,
    /// Bytes handed to the OS since the pacer last looked.
    unpaced: u64,
}

impl Output {
    /// Starts segment `id` of `dir` under its temporary name.
    pub fn create(dir: &Dir, id: u64) -> Result<Output> {
        let temp = segment::temp_path(dir, id, FileKind::Data);
        // Left by a compaction of another process that died: the maintenance lock is ours now.
        if dir.exists(&temp) {
            dir.vfs()
                .remove_file(&temp)
                .context("removing a dead compaction's output", &temp)?;
        }
        let file = dir
            .vfs()
            .open(&temp, Open::CreateNew)
            .context("creating a compaction output", &temp)?;
        let mut header = segment::encode_header(id, FileKind::Data).to_vec();
        header.resize(segment::data_start(FORMAT_VERSION), 0);
        if let Err(e) = file.write_at(&header, 0) {
            let _ = dir.vfs().remove_file(&temp);
            return Err(Error::io("writing a compaction output", &temp, e));
        }
        Ok(Output {
            id,
            temp,
            file,
            dir: dir.clone(),
            buf: Vec::with_capacity(BUFFER),
            len: header.len() as u64,
            hint: HintBuilder::new(id, FORMAT_VERSION),
            unsynced: 0,
            unpaced: 0,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends a record; returns its offset and the bytes it takes.
    pub fn push(
        &mut self,
        flags: u8,
        expires_at: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<(u64, u32)> {
        let offset = self.len;
        record::encode_into(&mut self.buf, flags, expires_at, key, value);
        let len = record::padded_len(key.len(), value.len()) as u32;
        self.len += u64::from(len);
        self.hint.push(&HintEntry {
            tombstone: flags & FLAG_TOMBSTONE != 0,
            expires_at,
            offset: offset as u32,
            len,
            key,
        });
        if self.buf.len() >= BUFFER {
            self.write_buffer()?;
        }
        Ok((offset, len))
    }

    fn write_buffer(&mut self) -> Result<()> {
        let at = self.len - self.buf.len() as u64;
        self.file
            .write_at(&self.buf, at)
            .context("writing a compaction output", &self.temp)?;
        self.unsynced += self.buf.len() as u64;
        self.unpaced += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// After each buffer written, lets the pacer slow the writing down while durable writers
    /// are syncing (see [`crate::pacer`]); returns the time slept.
    pub fn pace(&mut self, pacer: &mut Pacer, foreground_syncs: u64) -> Result<Duration> {
        if self.unpaced == 0 {
            return Ok(Duration::ZERO);
        }
        let step = pacer.after_chunk(self.unpaced, foreground_syncs, self.unsynced);
        self.unpaced = 0;
        if step.sync {
            self.file
                .sync_data()
                .context("syncing a compaction output", &self.temp)?;
            self.unsynced = 0;
        }
        if !step.sleep.is_zero() {
            std::thread::sleep(step.sleep);
        }
        Ok(step.sleep)
    }

    /// Makes the output durable under its final name, writes its hint file, and opens it as
    /// a sealed segment (which says whether the hint was written).
    pub fn finish(mut self, dir: &Dir) -> Result<Segment> {
        self.write_buffer()?;
        self.file
            .sync_all()
            .context("syncing a compaction output", &self.temp)?;
        let path = segment::path(dir, self.id);
        dir.vfs()
            .rename(&self.temp, &path)
            .context("renaming a compaction output", &self.temp)?;
        segment::sync_dir(dir)?;
        drop(self.file);
        let seg = Segment::open(dir, self.id, false)?;
        seg.set_end(self.len);
        // The data is durable; a hint that fails to be written only makes a rebuild slower.
        let hint = self.hint.finish(self.len);
        seg.set_has_hint(hint::write(dir, self.id, &hint).is_ok());
        Ok(seg)
    }

    /// Removes the unfinished output.
    pub fn abandon(self) {
        let _ = self.dir.vfs().remove_file(&self.temp);
    }
}
