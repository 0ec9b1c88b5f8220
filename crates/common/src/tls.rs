//! TLS for every gRPC server and client (rustls through tonic), configured under `[security]`:
//!
//! - servers: `tls_cert_file` + `tls_key_file` turn TLS on (plain HTTP/2 without them, the
//!   local cluster's default); `tls_client_ca_file` additionally requires every caller to
//!   present a certificate signed by that CA (mutual TLS), refused in the handshake otherwise.
//! - clients: `tls_ca_file` is the trust root for the servers and turns TLS on for addresses
//!   given without a scheme; `tls_client_cert_file` + `tls_client_key_file` are the identity
//!   presented to servers that require one; `tls_server_name` overrides the name checked.
//!
//! Every file is read and its PEM parsed at startup, so a wrong path or a key pasted into the
//! certificate field fails the process with the key and the file named, instead of failing
//! each handshake later. The Prometheus/health HTTP endpoint stays plain (see `crate::http`).

use crate::config::SecurityConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid config key security.{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config key security.{key}: {path} is not a PEM {what}: {message}")]
    BadPem {
        key: &'static str,
        path: String,
        what: &'static str,
        message: String,
    },
    #[error("invalid config key security.{key}: {message}")]
    Incomplete { key: &'static str, message: String },
    #[error(
        "invalid config keys security.tls_cert_file ({cert}) and security.tls_key_file ({key}): {message}"
    )]
    Rejected {
        cert: String,
        key: String,
        message: String,
    },
    #[error("invalid gRPC address {address}: {message}")]
    Address { address: String, message: String },
}

/// PEM text of the file named by `security.<key>`, with at least one certificate in it.
fn certificates(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    let pem = read(key, path)?;
    let bad = |message: String| TlsError::BadPem {
        key,
        path: path.to_owned(),
        what: "certificate",
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(pem)
}

/// PEM text of the file named by `security.<key>`, holding a private key.
fn private_key(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::BadPem {
        key,
        path: path.to_owned(),
        what: "private key",
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY block (PKCS#8, RSA or EC) found".into()
            }
            e => e.to_string(),
        },
    })?;
    Ok(pem)
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Both halves of an identity or neither: a certificate without its key is a typo, not a
/// choice.
fn identity(
    cert_key: &'static str,
    cert: &str,
    key_key: &'static str,
    key: &str,
) -> Result<Option<Identity>, TlsError> {
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Err(TlsError::Incomplete {
            key: key_key,
            message: format!("security.{cert_key} is set, so its private key is needed too"),
        }),
        (true, false) => Err(TlsError::Incomplete {
            key: cert_key,
            message: format!("security.{key_key} is set, so its certificate is needed too"),
        }),
        (false, false) => Ok(Some(Identity::from_pem(
            certificates(cert_key, cert)?,
            private_key(key_key, key)?,
        ))),
    }
}

/// The server's TLS settings; `None` (plain) when no server certificate is configured.
pub fn server_config(cfg: &SecurityConfig) -> Result<Option<ServerTlsConfig>, TlsError> {
    let Some(id) = identity(
        "tls_cert_file",
        &cfg.tls_cert_file,
        "tls_key_file",
        &cfg.tls_key_file,
    )?
    else {
        if !cfg.tls_client_ca_file.is_empty() {
            return Err(TlsError::Incomplete {
                key: "tls_client_ca_file",
                message: "client certificates need TLS: set security.tls_cert_file and \
                          security.tls_key_file too"
                    .into(),
            });
        }
        return Ok(None);
    };
    let mut tls = ServerTlsConfig::new().identity(id);
    if !cfg.tls_client_ca_file.is_empty() {
        // Required, not optional: tonic refuses a handshake without a client certificate.
        tls = tls.client_ca_root(Certificate::from_pem(certificates(
            "tls_client_ca_file",
            &cfg.tls_client_ca_file,
        )?));
    }
    Ok(Some(tls))
}

/// `Server::builder()` with TLS when configured: every gRPC server starts here, so health and
/// reflection are served behind the same TLS (and client-certificate check) as the API.
pub fn server_builder(cfg: &SecurityConfig) -> Result<Server, TlsError> {
    let builder = Server::builder();
    let Some(tls) = server_config(cfg)? else {
        return Ok(builder);
    };
    // rustls checks here that the key belongs to the certificate.
    builder.tls_config(tls).map_err(|e| TlsError::Rejected {
        cert: cfg.tls_cert_file.clone(),
        key: cfg.tls_key_file.clone(),
        message: error_chain(&e),
    })
}

/// The client's TLS settings; `None` when no trust root is configured.
pub fn client_config(cfg: &SecurityConfig) -> Result<Option<ClientTlsConfig>, TlsError> {
    if cfg.tls_ca_file.is_empty() {
        if !cfg.tls_client_cert_file.is_empty() || !cfg.tls_client_key_file.is_empty() {
            return Err(TlsError::Incomplete {
                key: "tls_ca_file",
                message: "a client certificate is configured, so the servers' CA is needed \
                          too (there are no built-in trust roots)"
                    .into(),
            });
        }
        return Ok(None);
    }
    let id = identity(
        "tls_client_cert_file",
        &cfg.tls_client_cert_file,
        "tls_client_key_file",
        &cfg.tls_client_key_file,
    )?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(certificates(
        "tls_ca_file",
        &cfg.tls_ca_file,
    )?));
    if let Some(id) = id {
        tls = tls.identity(id);
    }
    if !cfg.tls_server_name.is_empty() {
        tls = tls.domain_name(cfg.tls_server_name.clone());
    }
    Ok(Some(tls))
}

/// A client endpoint for `address`: `host:port` (TLS when `security.tls_ca_file` is set,
/// plain otherwise), or an explicit `http://` or `https://` URL (`https` needs the CA).
/// Not connected yet: callers add their timeouts and connect.
pub fn endpoint(address: &str, cfg: &SecurityConfig) -> Result<Endpoint, TlsError> {
    let tls = client_config(cfg)?;
    let url = if address.contains("://") {
        address.to_owned()
    } else if tls.is_some() {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    };
    let bad = |message: String| TlsError::Address {
        address: address.to_owned(),
        message,
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| bad(error_chain(&e)))?;
    match (url.starts_with("https://"), tls) {
        (true, Some(tls)) => endpoint.tls_config(tls).map_err(|e| bad(error_chain(&e))),
        (true, None) => Err(TlsError::Incomplete {
            key: "tls_ca_file",
            message: format!("{address} is https, so the servers' CA is needed"),
        }),
        (false, _) if url.starts_with("http://") => Ok(endpoint),
        (false, _) => Err(bad(
            "use host:port, http://host:port or https://host:port".into()
        )),
    }
}

/// An error and its sources on one line (tonic's and hyper's own Display often say only
/// "transport error" or "client error"). Also used by the scheduler's scraper.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // A throwaway self-signed certificate (P-256), its key, and a key of another pair; made
    // for these tests only.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfDCCASOgAwIBAgIUMJotuEY+samSV8YRH9eJ6dbVUO8wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI2MTEyODE0NTc0NFoXDTM2MTEyNTE0
NTc0NFowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEF4EmfdPlfCRDtIgAQvSy+VM+aTPqHM/gtBmxXgLgaMhP8nUMtbGx2x5r
pa/MG/flZQrwjK4bleHwgc5f4ozvX6NTMFEwHQYDVR0OBBYEFFysyY8XiRMSAbuR
2GbUhhqBTbUcMB8GA1UdIwQYMBaAFFysyY8XiRMSAbuR2GbUhhqBTbUcMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgRVs5JDPORpxZLt77y0YNgBAH
0Itl/sCrxSbZIpOUhaQCIEhUpDxWSeApKDtvPIoGNBIrwURVrqJBT+7O/L4M410j
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgD7P+zCHGS0OUcm6j
iP4+CjW9MIy2c2x3EmXPmgO/LcehRANCAAQXgSZ90+V8JEO0iABC9LL5Uz5pM+oc
z+C0GbFeAuBoyE/ydQy1sbHbHmulr8wb9+VlCvCMrhuV4fCBzl/ijO9f
-----END PRIVATE KEY-----
";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghOjeUPPx6wwH0ez+
lD4lfJhC7+qhzfJv4LZBwRXw4nShRANCAAT/9tEgVTl19mp+h/VmnMAhPrm6NOry
PtVqYLWJmjcGscsormPuZOTyUHWQW86eRkZI/UnVISTbbOMR/fkLMY9i
-----END PRIVATE KEY-----
";

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn path(f: &tempfile::NamedTempFile) -> String {
        f.path().display().to_string()
    }

    #[test]
    fn every_key_has_its_environment_variable() {
        let var = |key: &str| format!("RECALLOC_SECURITY_{}", key.to_ascii_uppercase());
        let keys = [
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
            "tls_ca_file",
            "tls_client_cert_file",
            "tls_client_key_file",
            "tls_server_name",
        ];
        let env = keys.map(|k| (var(k), format!("/tls/{k}"))).into();
        let s = crate::Config::load_from(None, &env).unwrap().security;
        let got = [
            s.tls_cert_file,
            s.tls_key_file,
            s.tls_client_ca_file,
            s.tls_ca_file,
            s.tls_client_cert_file,
            s.tls_client_key_file,
            s.tls_server_name,
        ];
        assert_eq!(got, keys.map(|k| format!("/tls/{k}")));
    }

    #[test]
    fn nothing_configured_means_plain() {
        let cfg = SecurityConfig::default();
        assert!(server_config(&cfg).unwrap().is_none());
        assert!(client_config(&cfg).unwrap().is_none());
        assert_eq!(
            endpoint("127.0.0.1:1", &cfg).unwrap().uri().to_string(),
            "http://127.0.0.1:1/"
        );
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_path() {
        let key = file("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let cfg = SecurityConfig {
            tls_cert_file: "/no/such/tls.crt".into(),
            tls_key_file: path(&key),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_cert_file"), "{err}");
        assert!(err.contains("/no/such/tls.crt"), "{err}");
        let cfg = SecurityConfig {
            tls_ca_file: "/no/such/ca.crt".into(),
            ..Default::default()
        };
        let err = endpoint("127.0.0.1:1", &cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_ca_file"), "{err}");
        assert!(err.contains("/no/such/ca.crt"), "{err}");
    }

    #[test]
    fn bad_pem_names_the_key_and_the_path() {
        let not_pem = file("hello, I am not a certificate\n");
        let cert = file(CERT);
        // A certificate where the key belongs: no private key in it.
        let cfg = SecurityConfig {
            tls_cert_file: path(&cert),
            tls_key_file: path(&cert),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_key_file"), "{err}");
        assert!(err.contains(&path(&cert)), "{err}");
        assert!(err.contains("private key"), "{err}");
        // Text where a certificate belongs.
        let cfg = SecurityConfig {
            tls_cert_file: path(&not_pem),
            tls_key_file: path(&cert),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_cert_file"), "{err}");
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        let cfg = SecurityConfig {
            tls_ca_file: path(&not_pem),
            ..Default::default()
        };
        let err = client_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_ca_file"), "{err}");
        assert!(err.contains(&path(&not_pem)), "{err}");
        // A section that starts and never ends.
        let cut = file(&CERT[..200]);
        let cfg = SecurityConfig {
            tls_client_ca_file: path(&cut),
            tls_cert_file: path(&cert),
            tls_key_file: path(&cert),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_"), "{err}");
    }

    #[test]
    fn a_matching_pair_serves_and_a_foreign_key_is_refused() {
        let (cert, key, other) = (file(CERT), file(KEY), file(OTHER_KEY));
        let cfg = SecurityConfig {
            tls_cert_file: path(&cert),
            tls_key_file: path(&key),
            tls_client_ca_file: path(&cert),
            ..Default::default()
        };
        assert!(server_builder(&cfg).is_ok());
        let cfg = SecurityConfig {
            tls_key_file: path(&other),
            ..cfg
        };
        let err = server_builder(&cfg).unwrap_err().to_string();
        assert!(
            err.contains(&path(&cert)) && err.contains(&path(&other)),
            "{err}"
        );
        let client = SecurityConfig {
            tls_ca_file: path(&cert),
            tls_client_cert_file: path(&cert),
            tls_client_key_file: path(&key),
            tls_server_name: "localhost".into(),
            ..Default::default()
        };
        assert!(client_config(&client).unwrap().is_some());
    }

    #[test]
    fn half_an_identity_is_an_error() {
        let cert = file(CERT);
        let cfg = SecurityConfig {
            tls_cert_file: path(&cert),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_key_file"), "{err}");
        let cfg = SecurityConfig {
            tls_client_ca_file: path(&cert),
            ..Default::default()
        };
        let err = server_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_client_ca_file"), "{err}");
        assert!(err.contains("security.tls_cert_file"), "{err}");
        let cfg = SecurityConfig {
            tls_client_key_file: path(&cert),
            tls_ca_file: path(&cert),
            ..Default::default()
        };
        let err = client_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_client_cert_file"), "{err}");
        let cfg = SecurityConfig {
            tls_client_cert_file: path(&cert),
            tls_client_key_file: path(&cert),
            ..Default::default()
        };
        let err = client_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("security.tls_ca_file"), "{err}");
    }

    #[test]
    fn addresses_choose_the_scheme() {
        let ca = file(CERT);
        let tls = SecurityConfig {
            tls_ca_file: path(&ca),
            ..Default::default()
        };
        let plain = SecurityConfig::default();
        let uri = |a: &str, c: &SecurityConfig| endpoint(a, c).unwrap().uri().to_string();
        assert_eq!(uri("127.0.0.1:5", &tls), "https://127.0.0.1:5/");
        assert_eq!(uri("http://127.0.0.1:5", &tls), "http://127.0.0.1:5/");
        assert_eq!(uri("https://rank.svc:5", &tls), "https://rank.svc:5/");
        let err = endpoint("https://rank.svc:5", &plain)
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.tls_ca_file"), "{err}");
        let err = endpoint("ftp://rank.svc:5", &plain)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp://rank.svc:5"), "{err}");
    }
}
