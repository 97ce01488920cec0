//! Streaming backups to and from S3: pg_dump → zstd → age → SHA-256 → multipart upload, and back.
//! The byte-crunching runs on a blocking thread with std's Read/Write (zstd and age are
//! synchronous); it hands fixed-size parts to the async uploader through a channel of two, so
//! memory stays bounded by a few parts whatever the database size. No temporary file on the way up.

use std::io::{Read, Write};

use sha2::Digest;

use super::aws;
use crate::actions::ActionError;
use crate::actions::s3::S3;

/// The first parts' size. Parts grow by this much every 1,000 parts, so S3's 10,000-part limit
/// is met up to 440 GiB per object while a small object (one table) holds little memory: each
/// stream holds at most three parts (filling, queued, uploading).
pub const PART: usize = 8 * 1024 * 1024;

fn part_size(sent: usize) -> usize {
    PART * (1 + sent / 1000)
}

/// How a backup is sealed.
#[derive(Clone)]
pub enum Seal {
    None,
    Recipients(Vec<age::x25519::Recipient>),
    Passphrase(String),
}

impl Seal {
    pub fn name(&self) -> &'static str {
        match self {
            Seal::None => "none",
            Seal::Recipients(_) => "age-x25519",
            Seal::Passphrase(_) => "age-scrypt",
        }
    }
}

/// Collects bytes into parts for the uploader, hashing everything that passes.
struct Parts {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    hash: sha2::Sha256,
    size: u64,
    sent: usize,
}

impl Write for Parts {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hash.update(data);
        self.size += data.len() as u64;
        let mut rest = data;
        while !rest.is_empty() {
            let size = part_size(self.sent);
            let room = size - self.buf.len();
            let n = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == size {
                self.sent += 1;
                let next = Vec::with_capacity(part_size(self.sent));
                let part = std::mem::replace(&mut self.buf, next);
                self.tx
                    .blocking_send(part)
                    .map_err(|_| std::io::Error::other("the upload stopped"))?;
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the blocking side produced.
pub struct Sealed {
    pub plain_size: u64,
    pub size: u64,
    pub sha256: String,
}

/// What an upload stored.
pub struct Uploaded {
    pub size: u64,
    pub sha256: String,
}

fn encryptor(seal: &Seal) -> std::io::Result<Option<age::Encryptor>> {
    Ok(match seal {
        Seal::None => None,
        Seal::Recipients(r) => Some(
            age::Encryptor::with_recipients(r.iter().map(|r| r as &dyn age::Recipient))
                .map_err(std::io::Error::other)?,
        ),
        Seal::Passphrase(p) => Some(age::Encryptor::with_user_passphrase(
            age::secrecy::SecretString::from(p.clone()),
        )),
    })
}

/// Reads `input` to the end through zstd and the seal into `out`; returns the plain size.
fn seal_into(
    mut input: impl Read,
    level: i32,
    seal: &Seal,
    out: &mut dyn Write,
) -> std::io::Result<u64> {
    sealing(level, seal, out, |w| {
        std::io::copy(&mut input, w).map(|_| ())
    })
    .map(|((), n)| n)
}

/// Runs `fill` with a writer that compresses with zstd and seals into `out`; returns what
/// `fill` made and how many plain bytes it wrote.
fn sealing<T>(
    level: i32,
    seal: &Seal,
    out: &mut dyn Write,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<T>,
) -> std::io::Result<(T, u64)> {
    match encryptor(seal)? {
        Some(enc) => {
            let sealed = enc.wrap_output(out)?;
            let mut z = CountedWrite {
                inner: zstd::Encoder::new(sealed, level)?,
                n: 0,
            };
            let made = fill(&mut z)?;
            z.inner.finish()?.finish()?;
            Ok((made, z.n))
        }
        None => {
            let mut z = CountedWrite {
                inner: zstd::Encoder::new(out, level)?,
                n: 0,
            };
            let made = fill(&mut z)?;
            z.inner.finish()?;
            Ok((made, z.n))
        }
    }
}

/// Counts what is written through it.
struct CountedWrite<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountedWrite<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Uploads what `fill` writes (on a blocking thread), compressed and sealed, to `key`; `fail`
/// turns a failure to write into the action's error (it knows what was being written).
pub async fn write_to_s3<T: Send + 'static>(
    s3c: &S3,
    key: &str,
    level: i32,
    seal: Seal,
    storage_class: Option<&str>,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<T> + Send + 'static,
    fail: impl FnOnce(std::io::Error) -> ActionError + Send + 'static,
) -> Result<(T, Sealed), ActionError> {
    let ((made, plain_size), up) = upload_from(s3c, key, storage_class, move |out| {
        sealing(level, &seal, out, fill).map_err(fail)
    })
    .await?;
    Ok((
        made,
        Sealed {
            plain_size,
            size: up.size,
            sha256: up.sha256,
        },
    ))
}

/// Uploads what `produce` writes (on a blocking thread: zstd and age are synchronous) to `key`
/// as a multipart upload, hashing it, with at most three parts in memory. Aborts the upload on
/// any failure, so no partial object is left.
pub async fn upload_from<T: Send + 'static>(
    s3c: &S3,
    key: &str,
    storage_class: Option<&str>,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, ActionError> + Send + 'static,
) -> Result<(T, Uploaded), ActionError> {
    let what = format!("uploading s3://{}/{key}", s3c.bucket);
    let upload = s3c
        .client
        .create_multipart_upload()
        .bucket(&s3c.bucket)
        .key(key)
        .set_storage_class(storage_class.map(aws_sdk_s3::types::StorageClass::from))
        .send()
        .await
        .map_err(|e| aws::classify(&e, &what))?;
    let upload_id = upload.upload_id().unwrap_or_default().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let worker = tokio::task::spawn_blocking(move || -> Result<(T, Uploaded), ActionError> {
        let mut parts = Parts {
            tx,
            buf: Vec::with_capacity(PART),
            hash: sha2::Sha256::new(),
            size: 0,
            sent: 0,
        };
        let made = produce(&mut parts)?;
        let last = std::mem::take(&mut parts.buf);
        if !last.is_empty() || parts.size == 0 {
            parts
                .tx
                .blocking_send(last)
                .map_err(|_| ActionError::transient("the upload stopped"))?;
        }
        Ok((
            made,
            Uploaded {
                size: parts.size,
                sha256: crate::runlog::hex(&parts.hash.finalize()),
            },
        ))
    });
    let mut done_parts = Vec::new();
    let mut failure = None;
    let mut n = 0;
    let meter = super::progress::Meter::new("uploaded", None);
    let mut sent: u64 = 0;
    while let Some(body) = rx.recv().await {
        n += 1;
        sent += body.len() as u64;
        let r = s3c
            .client
            .upload_part()
            .bucket(&s3c.bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            // SigV4 would hash every part again only to sign it. The bytes are age's
            // authenticated ciphertext and the whole object's SHA-256 is in the manifest,
            // checked before any restore: a changed byte cannot get through unnoticed.
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        match r {
            Ok(out) => {
                done_parts.push(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(String::from))
                        .build(),
                );
                meter.tick(sent);
            }
            Err(e) => {
                failure = Some(aws::classify(&e, &what));
                break;
            }
        }
    }
    drop(rx);
    let produced = worker
        .await
        .map_err(|e| ActionError::permanent(format!("the upload task crashed: {e}")))?;
    let result = match (failure, produced) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(s)) => Ok(s),
    };
    match result {
        Ok(s) => {
            let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(done_parts))
                .build();
            s3c.client
                .complete_multipart_upload()
                .bucket(&s3c.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(done)
                .send()
                .await
                .map_err(|e| aws::classify(&e, &what))?;
            Ok(s)
        }
        Err(e) => {
            let _ = s3c
                .client
                .abort_multipart_upload()
                .bucket(&s3c.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            Err(e)
        }
    }
}

/// Runs `cmd` (pg_dump writing to stdout), seals its output and uploads it to `key`.
pub async fn dump_to_s3(
    cmd: std::process::Command,
    s3c: &S3,
    key: &str,
    level: i32,
    seal: Seal,
    storage_class: Option<&str>,
) -> Result<Sealed, ActionError> {
    let (plain_size, up) = upload_from(s3c, key, storage_class, move |out| {
        use std::process::Stdio;
        let mut dump = super::process::Piped::spawn(cmd, Stdio::inherit(), Stdio::piped())
            .map_err(ActionError::permanent)?;
        let stdout = dump.child.stdout.take().expect("piped");
        let sealed = seal_into(stdout, level, &seal, out);
        let name = dump.name.clone();
        match dump.finish() {
            Err(e) => return Err(ActionError::transient(format!("waiting for {name}: {e}"))),
            Ok(Some(failed)) => return Err(ActionError::permanent(failed)),
            Ok(None) => {}
        }
        sealed.map_err(|e| ActionError::transient(format!("sealing the dump: {e}")))
    })
    .await?;
    Ok(Sealed {
        plain_size,
        size: up.size,
        sha256: up.sha256,
    })
}

/// Seals what a `COPY … TO STDOUT` streams, between `head` and `tail` (which make it a psql
/// script: `COPY t (cols) FROM stdin;` … `\.`), and uploads it to `key`.
#[allow(clippy::too_many_arguments)]
pub async fn rows_to_s3<E: std::fmt::Display>(
    rows: impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send,
    head: String,
    tail: &'static str,
    s3c: &S3,
    key: &str,
    level: i32,
    seal: Seal,
    storage_class: Option<&str>,
) -> Result<Sealed, ActionError> {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // COPY sends a message per row: gathered into 256 KiB batches before they cross to the
    // blocking side, or the hand-over per row costs more than the row (measured: 12x slower).
    const BATCH: usize = 256 * 1024;
    let feed = async move {
        let mut rows = std::pin::pin!(rows);
        let mut batch = bytes::BytesMut::with_capacity(BATCH);
        while let Some(r) = rows.next().await {
            match r {
                Ok(b) => {
                    batch.extend_from_slice(&b);
                    if batch.len() >= BATCH {
                        let full =
                            std::mem::replace(&mut batch, bytes::BytesMut::with_capacity(BATCH));
                        if tx.send(Chunk::Bytes(full.freeze())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Chunk::Failed(format!("reading rows: {e}"))).await;
                    return;
                }
            }
        }
        if !batch.is_empty() && tx.send(Chunk::Bytes(batch.freeze())).await.is_err() {
            return;
        }
        let _ = tx.send(Chunk::End).await;
    };
    let upload = upload_from(s3c, key, storage_class, move |out| {
        let chunks = Chunks {
            rx,
            cur: bytes::Bytes::new(),
            ended: false,
        };
        let input = std::io::Cursor::new(head.into_bytes())
            .chain(chunks)
            .chain(std::io::Cursor::new(tail.as_bytes()));
        seal_into(input, level, &seal, out)
            .map_err(|e| ActionError::transient(format!("sealing the rows: {e}")))
    });
    let ((), uploaded) = tokio::join!(feed, upload);
    let (plain_size, up) = uploaded?;
    Ok(Sealed {
        plain_size,
        size: up.size,
        sha256: up.sha256,
    })
}

/// Starts downloading `key`: the chunks, for a blocking reader, and the future that feeds them
/// while it hashes them. It tells the end only when every byte came and they hash to
/// `expected`; a mismatch reaches the reader as a failure, so a process being fed is stopped
/// before it can take a corrupt stream for whole. The future yields the hash when every byte
/// came.
async fn download(
    s3c: &S3,
    key: &str,
    expected: &str,
) -> Result<
    (
        tokio::sync::mpsc::Receiver<Chunk>,
        impl std::future::Future<Output = Option<String>> + use<>,
    ),
    ActionError,
> {
    let what = format!("downloading s3://{}/{key}", s3c.bucket);
    let out = s3c
        .client
        .get_object()
        .bucket(&s3c.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| aws::classify(&e, &what))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let source = format!("s3://{}/{key}", s3c.bucket);
    let expected = expected.to_string();
    let total = out.content_length().and_then(|l| u64::try_from(l).ok());
    let feed = async move {
        let mut body = out.body;
        let mut hash = sha2::Sha256::new();
        let meter = super::progress::Meter::new("downloaded", total);
        let mut got: u64 = 0;
        loop {
            match body.try_next().await {
                Ok(Some(b)) => {
                    hash.update(&b);
                    got += b.len() as u64;
                    meter.tick(got);
                    if tx.send(Chunk::Bytes(b)).await.is_err() {
                        return None;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Chunk::Failed(format!("{what}: {e}"))).await;
                    return None;
                }
            }
        }
        let sha = crate::runlog::hex(&hash.finalize());
        let last = if sha == expected {
            Chunk::End
        } else {
            Chunk::Failed(format!(
                "{source} has SHA-256 {sha}, the manifest says {expected}: it is corrupt or not the backup meant"
            ))
        };
        let _ = tx.send(last).await;
        Some(sha)
    };
    Ok((rx, feed))
}

/// Streams the object `from_key` of `from` to `to_key` of `to` through this machine: hashed on
/// the way (a source that does not match `expected` aborts the upload, so nothing is stored),
/// and with `reseal`, opened with the old key and sealed to the new recipients on the way (the
/// zstd stream inside is kept as it is).
pub async fn transfer(
    from: &S3,
    from_key: &str,
    expected: &str,
    to: &S3,
    to_key: &str,
    storage_class: Option<&str>,
    reseal: Option<(std::sync::Arc<Opener>, Seal)>,
) -> Result<Uploaded, ActionError> {
    let (rx, download) = download(from, from_key, expected).await?;
    let upload = upload_from(to, to_key, storage_class, move |out| {
        let mut chunks = Chunks {
            rx,
            cur: bytes::Bytes::new(),
            ended: false,
        };
        let io = |e: std::io::Error| ActionError::permanent(e.to_string());
        match reseal {
            None => {
                std::io::copy(&mut chunks, out).map_err(io)?;
            }
            Some((opener, seal)) => {
                let opened = decrypted(&mut chunks, &opener).map_err(ActionError::permanent)?;
                let mut sealed = match encryptor(&seal).map_err(io)? {
                    Some(enc) => enc.wrap_output(out).map_err(io)?,
                    None => {
                        return Err(ActionError::permanent(
                            "re-sealing needs recipients or a passphrase",
                        ));
                    }
                };
                let mut opened = opened;
                std::io::copy(&mut opened, &mut sealed).map_err(io)?;
                sealed.finish().map_err(io)?;
                drop(opened);
                std::io::copy(&mut chunks, &mut std::io::sink()).map_err(io)?;
            }
        }
        Ok(())
    });
    let (_, uploaded) = tokio::join!(download, upload);
    Ok(uploaded?.1)
}

/// The age layer opened, the zstd stream inside left as it is.
fn decrypted<'c>(stream: impl Read + 'c, opener: &Opener) -> Result<Box<dyn Read + 'c>, String> {
    let d = age::Decryptor::new(stream).map_err(|e| format!("not an age file: {e}"))?;
    let opened = match opener {
        Opener::Identity(id) => d.decrypt(std::iter::once(id as &dyn age::Identity)),
        Opener::Passphrase(p) => {
            let id = age::scrypt::Identity::new(age::secrecy::SecretString::from(p.clone()));
            d.decrypt(std::iter::once(&id as &dyn age::Identity))
        }
        Opener::None => return Err("the backup is encrypted with age; give `decrypt_with`".into()),
    };
    Ok(Box::new(
        opened.map_err(|e| format!("cannot decrypt: {e}"))?,
    ))
}

/// What the async downloader hands the blocking side.
enum Chunk {
    Bytes(bytes::Bytes),
    /// Every byte came.
    End,
    Failed(String),
}

/// Reads chunks from the async downloader as a std Read. The downloader hashes them: on a
/// thread of its own, beside the decrypting and decompressing here. A channel that closes
/// without [`Chunk::End`] (the attempt was cancelled) is an error, never a short stream: a
/// process being fed must not take a cut stream for the whole.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    cur: bytes::Bytes,
    ended: bool,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Bytes(b)) => self.cur = b,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(e)) => return Err(std::io::Error::other(e)),
                None => return Err(std::io::Error::other("the download stopped")),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// How a sealed backup is opened.
pub enum Opener {
    None,
    Identity(age::x25519::Identity),
    Passphrase(String),
}

/// A function that reads a stream to its end.
pub type ReadAll = dyn FnOnce(&mut dyn Read) -> Result<(), String> + Send;

/// Where an opened backup's bytes go.
pub enum Sink {
    /// A file, complete and verified or removed.
    File(std::path::PathBuf),
    /// Nowhere: a pass that only proves the backup is whole and opens (checksum, decryption,
    /// decompression), before a restore that cannot be undone.
    Nowhere,
    /// A process's standard input (pg_restore or psql), which the bytes are loaded by as they
    /// arrive; its failure is reported with the last lines it wrote to stderr. The function
    /// makes the command, told whether the opened bytes are a pg_dump archive (else SQL).
    Process(Box<dyn FnOnce(bool) -> std::process::Command + Send>),
    /// A function reading the opened bytes on the blocking side (a loader that sends them to a
    /// server as it reads, `Handle::block_on` for its async calls). Like a process, it has
    /// loaded what it read before the checksum is known: it fails when the stream does.
    Reader(Box<ReadAll>),
}

/// Downloads `key`, checks its SHA-256 against `expected`, and opens and decompresses it into
/// `sink` while it downloads. The checksum is known only at the end: a process sink has by then
/// loaded what it was given, so it must load into something that is thrown away when this fails
/// (a scratch database), or be preceded by a [`Sink::Nowhere`] pass.
pub async fn open_from_s3(
    s3c: &S3,
    key: &str,
    expected: &str,
    opener: std::sync::Arc<Opener>,
    sink: Sink,
) -> Result<u64, ActionError> {
    let (rx, feed) = download(s3c, key, expected).await?;
    let file = match &sink {
        Sink::File(p) => Some(p.clone()),
        _ => None,
    };
    let worker = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let mut chunks = Chunks {
            rx,
            cur: bytes::Bytes::new(),
            ended: false,
        };
        match sink {
            Sink::File(path) => {
                let mut f = std::fs::File::create(&path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                open_into(&mut chunks, &opener, &mut f)
            }
            Sink::Nowhere => open_into(&mut chunks, &opener, &mut std::io::sink()),
            Sink::Process(choose) => into_process(&mut chunks, &opener, choose),
            Sink::Reader(read) => {
                let mut counted = Counted {
                    inner: opened(&mut chunks, &opener)?,
                    n: 0,
                };
                read(&mut counted)?;
                let n = counted.n;
                drop(counted);
                std::io::copy(&mut chunks, &mut std::io::sink()).map_err(|e| e.to_string())?;
                Ok(n)
            }
        }
    });
    let sha = feed.await;
    let result = worker
        .await
        .map_err(|e| ActionError::permanent(format!("the restore task crashed: {e}")))?;
    let fail = |msg: String| {
        if let Some(p) = &file {
            let _ = std::fs::remove_file(p);
        }
        ActionError::permanent(msg)
    };
    // A wrong checksum explains a failure to open better than the failure itself does.
    if let Some(sha) = sha
        && sha != expected
    {
        return Err(fail(format!(
            "s3://{}/{key} has SHA-256 {sha}, the manifest says {expected}: it is corrupt or not the backup meant",
            s3c.bucket
        )));
    }
    let plain = result.map_err(|e| fail(format!("s3://{}/{key}: {e}", s3c.bucket)))?;
    Ok(plain)
}

/// Counts what passes.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Opens the stream as what its first bytes say it is: lifeboat's own (age or not, zstd), or the
/// legacy shell pipeline's (openssl enc, gzip).
fn opened<'c>(chunks: &'c mut Chunks, opener: &Opener) -> Result<Box<dyn Read + 'c>, String> {
    let mut head = Vec::with_capacity(32);
    (&mut *chunks)
        .take(32)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    let stream = std::io::Cursor::new(head.clone()).chain(chunks);
    Ok(if head.starts_with(super::legacy::MAGIC) {
        let Opener::Passphrase(p) = opener else {
            return Err(
                "a legacy openssl-encrypted backup needs its passphrase in `decrypt_with`".into(),
            );
        };
        let dec = super::legacy::OpensslReader::new(stream, p).map_err(|e| e.to_string())?;
        Box::new(flate2::read::MultiGzDecoder::new(dec))
    } else if head.starts_with(b"age-encryption.org/") {
        Box::new(zstd::Decoder::new(decrypted(stream, opener)?).map_err(|e| e.to_string())?)
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Box::new(zstd::Decoder::new(stream).map_err(|e| e.to_string())?)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(stream))
    } else {
        return Err(
            "not a backup lifeboat can open (neither age, zstd, openssl enc nor gzip)".into(),
        );
    })
}

/// Opens the stream into `out`, then drains what the decoders left unread, which still counts
/// for the checksum.
fn open_into(chunks: &mut Chunks, opener: &Opener, out: &mut dyn Write) -> Result<u64, String> {
    let plain = {
        let mut reader = opened(chunks, opener)?;
        std::io::copy(&mut reader, out).map_err(|e| format!("opening the backup: {e}"))?
    };
    std::io::copy(chunks, &mut std::io::sink()).map_err(|e| e.to_string())?;
    // No fsync of a file sink: it lives only for this attempt (a crash means fetching it
    // again), and forcing it to disk would only delay pg_restore, which reads it from the page
    // cache anyway.
    Ok(plain)
}

/// Feeds the opened stream to a process's stdin and waits for it. `choose` picks the process
/// from the first bytes of the opened stream (`PGDMP`: a pg_dump archive, for pg_restore; else
/// SQL, for psql).
fn into_process(
    chunks: &mut Chunks,
    opener: &Opener,
    choose: Box<dyn FnOnce(bool) -> std::process::Command + Send>,
) -> Result<u64, String> {
    let mut fed: Result<u64, String>;
    let mut reader = opened(chunks, opener)?;
    let mut head = Vec::with_capacity(5);
    (&mut reader)
        .take(5)
        .read_to_end(&mut head)
        .map_err(|e| format!("opening the backup: {e}"))?;
    let mut load = super::process::Piped::spawn(
        choose(head == b"PGDMP"),
        std::process::Stdio::piped(),
        std::process::Stdio::null(),
    )?;
    let mut stdin = load.child.stdin.take().expect("piped");
    fed = stdin
        .write_all(&head)
        .map_err(|e| format!("opening the backup: {e}"))
        .and_then(|()| {
            std::io::copy(&mut reader, &mut stdin).map_err(|e| format!("opening the backup: {e}"))
        })
        .map(|n| n + head.len() as u64);
    drop(reader);
    if fed.is_ok() {
        fed = std::io::copy(chunks, &mut std::io::sink())
            .map_err(|e| e.to_string())
            .and(fed);
    }
    drop(stdin);
    if fed.is_err() {
        // What is loaded so far is thrown away with the database it went into; the process must
        // not go on to commit a part of it.
        let _ = load.child.kill();
    }
    let name = load.name.clone();
    let failed = load
        .finish()
        .map_err(|e| format!("waiting for {name}: {e}"))?;
    match (fed, failed) {
        // A process that stopped reading (it failed) breaks the pipe: its own words say why.
        (Err(e), Some(why)) if e.contains("Broken pipe") => Err(why),
        (Err(e), _) => Err(e),
        (Ok(_), Some(why)) => Err(why),
        (Ok(n), None) => Ok(n),
    }
}
