//! A throwaway BIND 9 (scripts/dns-server) and a moto Route 53 API (scripts/route53-server),
//! stopped when dropped; and `dig`, to check what they serve without going through lifeboat.

use std::path::PathBuf;
use std::process::Command;

/// BIND serving failover.test. (updates signed with `failover-key`) and readonly.test. (no
/// updates), each with app.<zone> A 192.0.2.10 TTL 300 and www.<zone> CNAME app.<zone>.
pub struct DnsServer {
    pub dir: PathBuf,
    pub port: u16,
    /// The TSIG secret (base64) of `failover-key`.
    pub secret: String,
    _tmp: tempfile::TempDir,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let s = super::start_service("dns-server", &[], &[]);
        let secret = std::fs::read_to_string(s.dir.join("key_secret")).unwrap();
        DnsServer {
            dir: s.dir,
            port: s.port,
            secret,
            _tmp: s.tmp,
        }
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `connections:` entry whose secret is `{{ secrets.tsig }}`.
    pub fn connection(&self, name: &str, zone: &str) -> String {
        format!(
            "  {name}:\n    rfc2136: {{server: \"{}\", zone: {zone}, key_name: failover-key, key_secret: \"{{{{ secrets.tsig }}}}\", algorithm: hmac-sha256}}\n",
            self.server()
        )
    }

    /// What the server answers, per `dig +noall +answer`: `(ttl, value)` of each record of
    /// that type at that name, sorted.
    pub fn dig(&self, name: &str, rtype: &str) -> Vec<(u32, String)> {
        let out = Command::new("dig")
            .args(["+noall", "+answer", "+norecurse", "+time=2", "+tries=2"])
            .arg(format!("-p{}", self.port))
            .args(["@127.0.0.1", name, rtype])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dig: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut rows: Vec<(u32, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5 && f[3] == rtype).then(|| (f[1].parse().unwrap(), f[4].to_string()))
            })
            .collect();
        rows.sort();
        rows
    }

    /// Changes a record behind lifeboat's back, with nsupdate and the zone's key.
    pub fn nsupdate(&self, commands: &str) {
        use std::io::Write;
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(self.dir.join("tsig.key"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let script = format!("server 127.0.0.1 {}\n{commands}\nsend\n", self.port);
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nsupdate failed");
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        super::stop_service("dns-server", &self.dir);
    }
}

/// moto's Route 53 API with hosted zone failover.test. holding app.failover.test. A 192.0.2.10.
pub struct Route53Server {
    pub dir: PathBuf,
    pub endpoint: String,
    pub zone_id: String,
    _tmp: tempfile::TempDir,
}

impl Route53Server {
    pub fn start() -> Route53Server {
        let s = super::start_service("route53-server", &[], &[]);
        let zone_id = std::fs::read_to_string(s.dir.join("zone_id")).unwrap();
        Route53Server {
            endpoint: format!("http://127.0.0.1:{}", s.port),
            dir: s.dir,
            zone_id,
            _tmp: s.tmp,
        }
    }

    pub fn connection(&self, name: &str) -> String {
        format!(
            "  {name}:\n    route53: {{hosted_zone_id: \"{}\", endpoint: \"{}\", region: us-east-1, access_key_id: test, secret_access_key: \"{{{{ secrets.aws_secret }}}}\"}}\n",
            self.zone_id, self.endpoint
        )
    }

    /// The zone's record sets as `name type ttl value,value`, listed with moto's own boto3.
    pub fn records(&self) -> Vec<String> {
        let env_dir = std::env::var("LIFEBOAT_TESTENV").unwrap_or_else(|_| {
            format!("{}/.cache/lifeboat-testenv", std::env::var("HOME").unwrap())
        });
        let out = Command::new(format!("{env_dir}/motovenv/bin/python"))
            .arg("-c")
            .arg(
                "import sys, boto3\n\
                 r = boto3.client('route53', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                     aws_access_key_id='test', aws_secret_access_key='test')\n\
                 for s in r.list_resource_record_sets(HostedZoneId=sys.argv[2])['ResourceRecordSets']:\n\
                 \x20   if s['Type'] in ('A', 'AAAA', 'CNAME'):\n\
                 \x20       print(s['Name'], s['Type'], s['TTL'], ','.join(sorted(v['Value'] for v in s['ResourceRecords'])))\n",
            )
            .args([&self.endpoint, &self.zone_id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        rows.sort();
        rows
    }
}

impl Drop for Route53Server {
    fn drop(&mut self) {
        super::stop_service("route53-server", &self.dir);
    }
}
