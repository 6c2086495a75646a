//! Certificates for the TLS tests, made with openssl.

/// TLS files made with openssl in a temporary directory: a CA, Redis's certificate for
/// 127.0.0.1 signed by it, a client certificate signed by it, and a second CA that signed
/// nothing here (the wrong CA).
pub struct TlsFiles {
    pub dir: std::path::PathBuf,
}

impl TlsFiles {
    pub fn make() -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("herald-tls-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let run = |args: &[&str]| {
            let out =
                std::process::Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ca in ["ca", "wrong-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=herald test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (name, ext) in [
            ("redis", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        TlsFiles { dir }
    }

    /// Path of one of the files (`ca.pem`, `wrong-ca.pem`, `client.pem`, `client.key`, ...).
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A TLS-only redis-server's flags after `--tls-port`: its certificate, the CA, client
    /// certificates required.
    pub fn server_flags(&self) -> Vec<String> {
        let [cert, key, ca] = ["redis.pem", "redis.key", "ca.pem"].map(|f| self.path(f));
        [
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// herald-server's flags for this CA and the client certificate.
    pub fn node_flags(&self) -> Vec<String> {
        let [ca, cert, key] = ["ca.pem", "client.pem", "client.key"].map(|f| self.path(f));
        ["--redis-ca-file", &ca, "--redis-cert-file", &cert, "--redis-key-file", &key]
            .map(str::to_owned)
            .to_vec()
    }

    /// redis-cli's flags for this CA and the client certificate.
    pub fn cli_flags(&self) -> Vec<String> {
        let [ca, cert, key] = ["ca.pem", "client.pem", "client.key"].map(|f| self.path(f));
        ["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key].map(str::to_owned).to_vec()
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
