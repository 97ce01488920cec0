//! The Neo4j test server (scripts/neo4j-server): the facts the Neo4j actions will rely on, proved
//! against the real Neo4j 5.26 Community from Maven Central.

use crate::common;

use common::neo4j::{Neo4jServer, PASSWORD};

/// Bolt 4.4 (what neo4rs speaks) on loopback, auth enforced, and no socket of the server's
/// reaching beyond loopback (usage reporting is off; this machine may send nothing else).
#[test]
fn the_test_server_speaks_bolt_4_4_on_loopback_with_auth() {
    let n = Neo4jServer::start();
    assert_eq!(n.handshake(&[(5, 4), (4, 4)]).1, (5, 4), "Bolt 5 too");
    assert_eq!(n.handshake(&[(4, 4)]).1, (4, 4));
    assert_eq!(n.handshake(&[(3, 0)]).1, (0, 0), "no Bolt 3");
    assert!(n.authenticates("neo4j", PASSWORD));
    assert!(!n.authenticates("neo4j", "not-the-password"));
    let sockets = std::process::Command::new("ss")
        .args(["-Htanp"])
        .output()
        .expect("ss (iproute2) lists sockets");
    let mine = format!("pid={},", n.pid());
    let text = String::from_utf8_lossy(&sockets.stdout);
    let own: Vec<&str> = text.lines().filter(|l| l.contains(&mine)).collect();
    assert!(!own.is_empty(), "the server's sockets are listed: {text}");
    for line in own {
        let cols: Vec<&str> = line.split_whitespace().collect();
        for addr in &cols[3..5] {
            let host = addr.rsplit_once(':').map_or(*addr, |(h, _)| h);
            assert!(
                host.contains("127.0.0.1") || host == "[::1]" || host == "*",
                "a socket beyond loopback: {line}"
            );
        }
    }
}

/// `neo4j-admin database dump` is refused while the server runs (Community has no online
/// backup: its store is locked) and works on the stopped server's folder.
#[test]
fn a_running_server_refuses_a_dump_and_a_stopped_one_dumps() {
    let n = Neo4jServer::start();
    let dump = || {
        std::process::Command::new(common::root().join("scripts/neo4j-server"))
            .args(["admin"])
            .arg(&n.dir)
            .args(["database", "dump", "neo4j", "--to-path"])
            .arg(n.dir.join("import"))
            .output()
            .unwrap()
    };
    assert!(
        !dump().status.success(),
        "a dump of a running DBMS is refused"
    );
    common::stop_service("neo4j-server", &n.dir);
    let stopped = dump();
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(n.dir.join("import/neo4j.dump").metadata().unwrap().len() > 0);
}
