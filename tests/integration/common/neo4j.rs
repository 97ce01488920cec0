//! A throwaway Neo4j 5.26 Community server from scripts/neo4j-server, stopped when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

pub const PASSWORD: &str = "lifeboat-Neo-42";

pub struct Neo4jServer {
    pub dir: PathBuf,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

impl Neo4jServer {
    pub fn start() -> Neo4jServer {
        let s = super::start_service("neo4j-server", &[], &[("NEO4J_TEST_PASSWORD", PASSWORD)]);
        Neo4jServer {
            dir: s.dir,
            port: s.port,
            _tmp: s.tmp,
        }
    }

    /// Starts the stopped server again on its folder (on a new port, read back).
    pub fn restart(&mut self) {
        let out = std::process::Command::new(super::root().join("scripts/neo4j-server"))
            .arg("start")
            .arg(&self.dir)
            .env("NEO4J_TEST_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.port = std::fs::read_to_string(self.dir.join("port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    }

    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Opens a Bolt connection and agrees on a version: the one the server picks of `offered`
    /// (major, minor), as (major, minor); (0, 0) when it takes none.
    pub fn handshake(&self, offered: &[(u8, u8)]) -> (TcpStream, (u8, u8)) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hello = vec![0x60, 0x60, 0xB0, 0x17];
        for i in 0..4 {
            let (major, minor) = offered.get(i).copied().unwrap_or((0, 0));
            hello.extend([0, 0, minor, major]);
        }
        s.write_all(&hello).unwrap();
        let mut agreed = [0u8; 4];
        s.read_exact(&mut agreed).unwrap();
        (s, (agreed[3], agreed[2]))
    }

    /// Bolt 4.4 HELLO with basic auth: whether the server answers SUCCESS.
    pub fn authenticates(&self, user: &str, password: &str) -> bool {
        let (mut s, v) = self.handshake(&[(4, 4)]);
        assert_eq!(v, (4, 4));
        // PackStream: a struct of one field (0xB1), signature HELLO (0x01), a map of four.
        let mut msg = vec![0xB1, 0x01, 0xA4];
        for (k, v) in [
            ("user_agent", "lifeboat-test/1"),
            ("scheme", "basic"),
            ("principal", user),
            ("credentials", password),
        ] {
            for text in [k, v] {
                let b = text.as_bytes();
                assert!(b.len() < 256);
                if b.len() < 16 {
                    msg.push(0x80 + b.len() as u8);
                } else {
                    msg.extend([0xD0, b.len() as u8]);
                }
                msg.extend(b);
            }
        }
        let mut chunk = (msg.len() as u16).to_be_bytes().to_vec();
        chunk.extend(&msg);
        chunk.extend([0, 0]);
        s.write_all(&chunk).unwrap();
        let mut head = [0u8; 4];
        s.read_exact(&mut head).unwrap();
        // [len][B1 or B0][signature]: 0x70 SUCCESS, 0x7F FAILURE.
        match head[3] {
            0x70 => true,
            0x7F => false,
            other => panic!("unexpected Bolt reply {other:#x}"),
        }
    }
}

impl Drop for Neo4jServer {
    fn drop(&mut self) {
        super::stop_service("neo4j-server", &self.dir);
    }
}
