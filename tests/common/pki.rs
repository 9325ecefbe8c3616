//! Test certificates made at run time (shared by the tests and `examples/bench.rs`).

/// A certificate authority and one certificate it signed for the nodes (naming
/// 127.0.0.1 and `processhub.test`), as PEM text, made at run time.
#[allow(dead_code)]
pub struct Pki {
    /// The authority's certificate: the trusted root.
    pub ca: String,
    /// The nodes' certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

#[allow(dead_code)]
impl Pki {
    /// A new authority and node certificate.
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut node = CertificateParams::new(vec!["processhub.test".to_string()]).unwrap();
        node.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        node.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let node_key = KeyPair::generate().unwrap();
        let cert = node.signed_by(&node_key, &issuer).unwrap();
        Self {
            ca: ca_cert.pem(),
            cert: cert.pem(),
            key: node_key.serialize_pem(),
        }
    }

    /// The nodes' TLS from it.
    pub fn tls(&self) -> processhub::Tls {
        processhub::Tls::from_pem(&self.cert, &self.key, &self.ca).unwrap()
    }

    /// Writes it to `dir` (for node processes: see [`Pki::tls_in`]).
    pub fn write_to(&self, dir: &std::path::Path) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, pem) in [
            ("ca.pem", &self.ca),
            ("node.pem", &self.cert),
            ("node.key", &self.key),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
    }

    /// The nodes' TLS from the files [`Pki::write_to`] wrote in `dir`.
    pub fn tls_in(dir: &std::path::Path) -> processhub::Tls {
        processhub::Tls::from_files(
            dir.join("node.pem"),
            dir.join("node.key"),
            dir.join("ca.pem"),
        )
        .unwrap()
    }
}
