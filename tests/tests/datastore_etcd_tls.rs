//! etcd over TLS, from Calico's variables (`ETCD_ENDPOINTS=https://…`,
//! `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`), against a real
//! etcd started with a server certificate and client-certificate checks
//! (`--client-cert-auth`). The certificates are made for the test with
//! `openssl`: a CA, etcd's server certificate for 127.0.0.1, a client
//! certificate, and a stranger CA that signed neither.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datastore::{DatastoreConfig, Error};
use ippool_crd::{IPPool, IPPoolSpec};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name`.key and `name`.crt signed by `ca` (self-signed when `None`).
fn cert(dir: &Path, name: &str, ca: Option<&str>, ext: &str) {
    let subj = format!("/CN={name}");
    match ca {
        None => openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &subj,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ),
        Some(ca) => {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &subj,
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.crt"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &format!("{name}.crt"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
    }
}

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_etcd(dir: &Path) -> (Etcd, String) {
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let f = |n: &str| dir.join(n).display().to_string();
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .args([
            "--name=tls",
            &format!("--data-dir={}", f("data")),
            &format!("--listen-client-urls={url}"),
            &format!("--advertise-client-urls={url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=tls={peer_url}"),
            "--initial-cluster-state=new",
            &format!("--cert-file={}", f("server.crt")),
            &format!("--key-file={}", f("server.key")),
            &format!("--trusted-ca-file={}", f("ca.crt")),
            "--client-cert-auth",
            "--log-level=error",
            "--logger=zap",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (Etcd(child), url)
}

fn config(vars: &[(&str, String)]) -> Result<DatastoreConfig, Error> {
    DatastoreConfig::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
}

/// Writes and reads a pool through `cfg`, retrying (bounded) while etcd
/// starts; the last error otherwise.
async fn round_trip(cfg: &DatastoreConfig, name: &str, within: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + within;
    loop {
        let r = async {
            let c = cfg.connect().await?;
            c.create(&IPPool::new(name, IPPoolSpec::new("10.80.0.0/16")))
                .await?;
            let got: Option<IPPool> = c.get(name).await?;
            assert_eq!(got.unwrap().spec.cidr, "10.80.0.0/16");
            Ok(())
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn calico_nodes_etcd_variables_reach_an_etcd_that_checks_client_certificates() {
    tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    cert(dir, "ca", None, "");
    cert(dir, "stranger", None, "");
    cert(
        dir,
        "server",
        Some("ca"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    cert(dir, "client", Some("ca"), "extendedKeyUsage=clientAuth\n");
    cert(
        dir,
        "other",
        Some("stranger"),
        "extendedKeyUsage=clientAuth\n",
    );
    let (_etcd, url) = start_etcd(dir);
    let p = |n: &str| -> String { dir.join(n).display().to_string() };
    let with = |ca: &str, cert: Option<(&str, &str)>| {
        let mut v = vec![
            ("DATASTORE_TYPE", "etcdv3".to_string()),
            ("ETCD_ENDPOINTS", url.clone()),
            ("ETCD_CA_CERT_FILE", p(ca)),
        ];
        if let Some((c, k)) = cert {
            v.push(("ETCD_CERT_FILE", p(c)));
            v.push(("ETCD_KEY_FILE", p(k)));
        }
        config(&v).unwrap()
    };

    // The CA and a client certificate it signed: reads and writes work.
    let good = with("ca.crt", Some(("client.crt", "client.key")));
    round_trip(&good, "tls-pool", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\netcd log:\n{}",
                std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
            )
        });

    // etcd is up now; each wrong setting is refused, and nothing written.
    let short = Duration::from_secs(2);
    for (what, cfg) in [
        ("no client certificate", with("ca.crt", None)),
        (
            "a client certificate from another CA",
            with("ca.crt", Some(("other.crt", "other.key"))),
        ),
        (
            "a CA that did not sign etcd's certificate",
            with("stranger.crt", Some(("client.crt", "client.key"))),
        ),
    ] {
        let e = round_trip(&cfg, "refused", short).await;
        assert!(e.is_err(), "{what}: accepted");
    }
    let c = good.connect().await.unwrap();
    assert!(c.get::<IPPool>("refused").await.unwrap().is_none());

    // Settings that cannot work say which variable is wrong.
    let err = |vars: &[(&str, String)]| config(vars).unwrap_err().to_string();
    let ep = ("ETCD_ENDPOINTS", url.clone());
    assert!(err(std::slice::from_ref(&ep)).contains("ETCD_CA_CERT_FILE is not set"));
    assert!(
        err(&[
            ep.clone(),
            ("ETCD_CA_CERT_FILE", p("ca.crt")),
            ("ETCD_CERT_FILE", p("client.crt"))
        ])
        .contains("ETCD_KEY_FILE is not")
    );
    assert!(
        err(&[
            ("ETCD_ENDPOINTS", "http://127.0.0.1:2379".into()),
            ("ETCD_CA_CERT_FILE", p("ca.crt"))
        ])
        .contains("has http:// entries")
    );
    let missing: PathBuf = dir.join("nope.crt");
    let cfg = config(&[ep, ("ETCD_CA_CERT_FILE", missing.display().to_string())]).unwrap();
    let e = cfg.connect().await.err().unwrap().to_string();
    assert!(
        e.contains("ETCD_CA_CERT_FILE") && e.contains("nope.crt"),
        "{e}"
    );
}
