//! Certificates made at test time for the TLS tests: the cluster's CA with a server certificate
//! for 127.0.0.1/localhost and a client certificate, and a second, foreign CA with a client
//! certificate of its own (what an outsider with *a* certificate has). Written as PEM files,
//! the form the services read.

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate and its key, as files.
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    /// The cluster's CA certificate.
    pub ca: PathBuf,
    /// Issued by `ca` for `localhost` and `127.0.0.1`, server use only.
    pub server: Identity,
    /// Issued by `ca`, client use only.
    pub client: Identity,
    /// A CA the cluster does not know.
    pub foreign_ca: PathBuf,
    /// Issued by `foreign_ca`, client use only.
    pub foreign_client: Identity,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn issue(
    dir: &Path,
    name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> Result<Identity> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let id = Identity {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&id.cert, cert.pem())?;
    std::fs::write(&id.key, key.serialize_pem())?;
    Ok(id)
}

impl Pki {
    /// Makes every certificate and writes them under `dir` (created).
    pub fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let cluster = ca("recalloc test CA")?;
        let foreign = ca("someone else's CA")?;
        let pki = Self {
            ca: dir.join("ca.crt"),
            server: issue(
                dir,
                "server",
                &["localhost", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
                &cluster,
            )?,
            client: issue(
                dir,
                "client",
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
                &cluster,
            )?,
            foreign_ca: dir.join("foreign-ca.crt"),
            foreign_client: issue(
                dir,
                "foreign-client",
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
                &foreign,
            )?,
        };
        std::fs::write(&pki.ca, cluster.pem())?;
        std::fs::write(&pki.foreign_ca, foreign.pem())?;
        Ok(pki)
    }

    /// `RECALLOC_SECURITY_*` settings for the whole cluster: servers speak TLS with the server
    /// certificate and require client certificates of the CA; clients (the CLI, the harness's
    /// own clients) trust the CA and present the client certificate.
    pub fn env(&self) -> Vec<(String, String)> {
        let p = |p: &Path| p.display().to_string();
        [
            ("TLS_CERT_FILE", p(&self.server.cert)),
            ("TLS_KEY_FILE", p(&self.server.key)),
            ("TLS_CLIENT_CA_FILE", p(&self.ca)),
            ("TLS_CA_FILE", p(&self.ca)),
            ("TLS_CLIENT_CERT_FILE", p(&self.client.cert)),
            ("TLS_CLIENT_KEY_FILE", p(&self.client.key)),
        ]
        .into_iter()
        .map(|(k, v)| (format!("RECALLOC_SECURITY_{k}"), v))
        .collect()
    }
}
