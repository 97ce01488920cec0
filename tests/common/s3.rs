//! A throwaway SeaweedFS S3 gateway from scripts/s3-server, stopped when dropped.

use std::path::PathBuf;
use std::process::Command;

pub const ACCESS_KEY: &str = "AKIDLIFEBOATTEST";
pub const SECRET_KEY: &str = "lifeboat-s3-secret-Tq81";

pub struct S3Server {
    pub dir: PathBuf,
    pub endpoint: String,
    _tmp: tempfile::TempDir,
}

impl S3Server {
    /// A server with these buckets.
    pub fn start(buckets: &[&str]) -> S3Server {
        // weed also takes each port + 10,000 for gRPC, which the script cannot check: a clash
        // makes it exit, and a fresh start picks fresh ports.
        let mut last = String::new();
        for _ in 0..3 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("s3");
            let mut cmd = Command::new(super::root().join("scripts/s3-server"));
            cmd.arg("start").arg(&dir);
            for b in buckets {
                cmd.args(["--bucket", b]);
            }
            let out = cmd
                .env("S3_TEST_ACCESS_KEY", ACCESS_KEY)
                .env("S3_TEST_SECRET_KEY", SECRET_KEY)
                .output()
                .unwrap();
            if out.status.success() {
                let port = std::fs::read_to_string(dir.join("port"))
                    .unwrap()
                    .trim()
                    .to_string();
                return S3Server {
                    dir,
                    endpoint: format!("http://127.0.0.1:{port}"),
                    _tmp: tmp,
                };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = Command::new(super::root().join("scripts/s3-server"))
                .arg("stop")
                .arg(&dir)
                .output();
        }
        panic!("s3-server start failed three times: {last}");
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
        let _ = Command::new(super::root().join("scripts/s3-server"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
