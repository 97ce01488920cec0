//! A throwaway SeaweedFS S3 gateway from scripts/s3-server, stopped when dropped.

use std::path::PathBuf;

pub const ACCESS_KEY: &str = "AKIDLIFEBOATTEST";
/// Random-looking, as a real key is: a test key made of words (it was `lifeboat-s3-secret-…`)
/// has those words masked in every message, since any six characters of a secret are.
pub const SECRET_KEY: &str = "Tq81-x9fZpW2mK7vQ3hR";

pub struct S3Server {
    pub dir: PathBuf,
    pub endpoint: String,
    _tmp: tempfile::TempDir,
}

impl S3Server {
    /// A server with these buckets.
    pub fn start(buckets: &[&str]) -> S3Server {
        S3Server::launch(buckets, &[])
    }

    /// A server that also serves HTTPS (`scripts/s3-server --tls`): its folder holds `tls/ca.crt`
    /// and `https_port`.
    pub fn start_tls(buckets: &[&str]) -> S3Server {
        S3Server::launch(buckets, &["--tls"])
    }

    fn launch(buckets: &[&str], extra: &[&str]) -> S3Server {
        // weed also takes each port + 10,000 for gRPC, which the script cannot check: a clash
        // makes it exit, and a fresh start (which start_service makes) picks fresh ports.
        let mut args: Vec<&str> = buckets.iter().flat_map(|b| ["--bucket", b]).collect();
        args.extend_from_slice(extra);
        let s = super::start_service(
            "s3-server",
            &args,
            &[
                ("S3_TEST_ACCESS_KEY", ACCESS_KEY),
                ("S3_TEST_SECRET_KEY", SECRET_KEY),
            ],
        );
        S3Server {
            endpoint: format!("http://127.0.0.1:{}", s.port),
            dir: s.dir,
            _tmp: s.tmp,
        }
    }

    /// A `connections:` entry for lifeboat, with the keys as secrets `s3_key` and `s3_secret`.
    pub fn connection(&self, name: &str, bucket: &str) -> String {
        format!(
            "  {name}: {{s3: {{bucket: {bucket}, endpoint: \"{}\", path_style: true, region: us-east-1, access_key_id: \"{{{{ secrets.s3_key }}}}\", secret_access_key: \"{{{{ secrets.s3_secret }}}}\"}}}}\n",
            self.endpoint
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        super::stop_service("s3-server", &self.dir);
    }
}
