//! TLS for the gRPC listener (rustls through tonic, `ring` provider) and
//! the identities of a verified client certificate, which `auth` maps to
//! callers (mutual TLS). Certificates and keys are read from PEM files at
//! start; rotating them means replacing the files and restarting.

use anyhow::Context;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The PEM files of the listener's TLS (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`), as configured.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    pub tls_client_ca: Option<std::path::PathBuf>,
}

/// The server's TLS configuration, or None to serve plaintext.
pub fn server_config(args: &TlsSettings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (None, None) => {
            if args.tls_client_ca.is_some() {
                anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key");
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let read = |path: &std::path::Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &args.tls_client_ca {
        // Optional: a client without a certificate may still use a token;
        // one that presents a certificate must chain to this CA.
        config = config.client_ca_root(Certificate::from_pem(read(ca)?)).client_auth_optional(true);
    }
    Ok(Some(config))
}

/// The names a client certificate (DER) identifies itself by: DNS and URI
/// subject alternative names, then common names. Only called on
/// certificates rustls has verified against the client CA.
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) => names.push((*n).to_owned()),
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(cn.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_sans_and_the_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["signup.internal".to_owned()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/web/sa/signup").expect("ia5"),
        ));
        params.distinguished_name.push(rcgen::DnType::CommonName, "signup-cn");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let names = identities(cert.der());
        assert_eq!(names, ["signup.internal", "spiffe://cluster.local/ns/web/sa/signup", "signup-cn"]);
        assert!(identities(b"not a certificate").is_empty());
    }
}
