//! Backups made by the shell scripts lifeboat replaces: `pg_dump | gzip | openssl enc
//! -aes-256-cbc -salt -pbkdf2 -iter 100000`. OpenSSL writes `Salted__`, an 8-byte salt, then
//! AES-256-CBC with PKCS#7 padding under a key and IV derived by PBKDF2-HMAC-SHA256.

use std::io::Read;

use aes::cipher::{BlockDecryptMut, KeyIvInit};

pub const MAGIC: &[u8; 8] = b"Salted__";
/// The iteration count of the scripts being replaced (openssl's own default is 10,000).
pub const ITERATIONS: u32 = 100_000;

type Decryptor = cbc::Decryptor<aes::Aes256>;

/// Decrypts an openssl `enc` stream as it is read, holding back the last block until the end so
/// its padding can be checked and removed. A wrong passphrase shows as bad padding at the end (or
/// as gzip garbage before it).
pub struct OpensslReader<R> {
    inner: R,
    cipher: Decryptor,
    /// Decrypted bytes ready to hand out.
    out: Vec<u8>,
    pos: usize,
    /// Ciphertext not yet decrypted: always keeps at least the last full block back.
    pending: Vec<u8>,
    done: bool,
}

impl<R: Read> OpensslReader<R> {
    /// `inner` starts at the `Salted__` header.
    pub fn new(mut inner: R, passphrase: &str) -> std::io::Result<Self> {
        let mut head = [0u8; 16];
        inner.read_exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(std::io::Error::other(
                "not an openssl `enc` file (no Salted__ header)",
            ));
        }
        let mut key_iv = [0u8; 48];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(ITERATIONS).expect("non-zero"),
            &head[8..16],
            passphrase.as_bytes(),
            &mut key_iv,
        );
        let cipher = Decryptor::new_from_slices(&key_iv[..32], &key_iv[32..])
            .map_err(std::io::Error::other)?;
        Ok(OpensslReader {
            inner,
            cipher,
            out: Vec::new(),
            pos: 0,
            pending: Vec::new(),
            done: false,
        })
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.pos >= self.out.len() && !self.done {
            self.out.clear();
            self.pos = 0;
            let n = self.inner.read(&mut buf)?;
            if n == 0 {
                self.done = true;
                if self.pending.len() != 16 {
                    return Err(std::io::Error::other(
                        "the encrypted backup is truncated (not a whole number of blocks)",
                    ));
                }
                let mut block = aes::Block::clone_from_slice(&self.pending);
                self.cipher.decrypt_block_mut(&mut block);
                let pad = block[15] as usize;
                if pad == 0 || pad > 16 || block[16 - pad..].iter().any(|&b| b as usize != pad) {
                    return Err(std::io::Error::other(
                        "bad padding: wrong passphrase, or a corrupted backup",
                    ));
                }
                self.out.extend_from_slice(&block[..16 - pad]);
                self.pending.clear();
                break;
            }
            self.pending.extend_from_slice(&buf[..n]);
            // Decrypt every whole block but the last.
            let whole = (self.pending.len().saturating_sub(1) / 16) * 16;
            for chunk in self.pending[..whole].chunks(16) {
                let mut block = aes::Block::clone_from_slice(chunk);
                self.cipher.decrypt_block_mut(&mut block);
                self.out.extend_from_slice(&block);
            }
            self.pending.drain(..whole);
        }
        Ok(())
    }
}

impl<R: Read> Read for OpensslReader<R> {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.out.len() {
            self.fill()?;
        }
        let n = dst.len().min(self.out.len() - self.pos);
        dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes `openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000` makes, when openssl
    /// is here to make them (Debian has it; the integration test needs it anyway).
    #[test]
    fn reads_what_openssl_writes() {
        let Ok(out) = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf 'hello legacy backup, more than one block of text here' | openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 -pass pass:s3cret-pass")
            .output()
        else {
            panic!("openssl is needed for this test (scripts/setup-test-env installs it)");
        };
        assert!(out.status.success());
        let mut r = OpensslReader::new(&out.stdout[..], "s3cret-pass").unwrap();
        let mut plain = String::new();
        r.read_to_string(&mut plain).unwrap();
        assert_eq!(
            plain,
            "hello legacy backup, more than one block of text here"
        );
        let mut wrong = OpensslReader::new(&out.stdout[..], "wrong-pass").unwrap();
        let mut sink = Vec::new();
        assert!(wrong.read_to_end(&mut sink).is_err());
    }
}
