//! A bearer-token registry: Docker Distribution with `auth.token`, and a small token server
//! written for the test that implements the flow exactly (the `WWW-Authenticate: Bearer
//! realm=...` challenge, a token request with optional basic credentials, an ES256 JWT whose
//! `x5c` certificate the registry trusts). Anonymous users may pull `public/*`; alice may do
//! anything.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::support::{
    HELLO, Registry, Reply, Server, WasmOci, describe, openssl, output_with_stdin, stderr,
    testdata, without_trust_store,
};

const USER: &str = "alice";
const PASSWORD: &str = "t0ken-Pa55";
/// What `az acr login` leaves in docker's config: an OAuth2 refresh token.
const IDENTITY_TOKEN: &str = "refresh-t0ken-for-alice";
const SERVICE: &str = "wasm-oci-test";
const ISSUER: &str = "wasm-oci-test-issuer";

pub struct TokenServer {
    pub realm: String,
    /// Tokens handed out.
    pub issued: Arc<AtomicU32>,
    _server: Server,
}

/// Makes the signing key and its self-signed certificate in `dir` (token.pk8, token.crt).
fn signing_key(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "token.key",
    ]);
    run(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "token.key",
        "-outform",
        "DER",
        "-out",
        "token.pk8",
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "token.key",
        "-out",
        "token.crt",
        "-days",
        "2",
        "-subj",
        "/CN=token signer",
    ]);
    run(&[
        "x509",
        "-in",
        "token.crt",
        "-outform",
        "DER",
        "-out",
        "token.der",
    ]);
}

fn start_token_server(dir: &Path) -> TokenServer {
    signing_key(dir);
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &fs::read(dir.join("token.pk8")).unwrap(),
        &rng,
    )
    .unwrap();
    let x5c = STANDARD.encode(fs::read(dir.join("token.der")).unwrap());
    let issued = Arc::new(AtomicU32::new(0));
    let counter = issued.clone();
    let server = Server::start(move |request| {
        answer(
            &format!("{} {}", request.method, request.path),
            request.header("authorization"),
            &String::from_utf8_lossy(&request.body),
            &key,
            &x5c,
            &rng,
            &counter,
        )
    });
    TokenServer {
        realm: server.url("/token"),
        issued,
        _server: server,
    }
}

/// One token request: `GET /token?service=..&scope=repository:NAME:ACTIONS` with optional
/// basic credentials, or the OAuth2 form docker sends for an identity token: `POST /token`
/// with `grant_type=refresh_token&refresh_token=..&scope=..`.
fn answer(
    request_line: &str,
    authorization: Option<&str>,
    form: &str,
    key: &EcdsaKeyPair,
    x5c: &str,
    rng: &ring::rand::SystemRandom,
    issued: &AtomicU32,
) -> Reply {
    let refused = || {
        Reply::new(401)
            .header("Content-Type", "application/json")
            .body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#)
    };
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let (user, params) = if request_line.starts_with("POST ") {
        let granted = form.split('&').any(|p| p == "grant_type=refresh_token")
            && form
                .split('&')
                .any(|p| p == format!("refresh_token={IDENTITY_TOKEN}"));
        if !granted {
            return refused();
        }
        (Some(USER), form.to_owned())
    } else {
        let user = match authorization {
            None => None,
            Some(a) if a == expected => Some(USER),
            Some(_) => return refused(),
        };
        let query = request_line.split_whitespace().nth(1).unwrap_or_default();
        (
            user,
            query.split_once('?').map_or("", |(_, q)| q).to_owned(),
        )
    };
    let mut access = Vec::new();
    for param in params.split('&') {
        let Some(scope) = param.strip_prefix("scope=") else {
            continue;
        };
        let scope = scope
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%2F", "/");
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| user.is_some() || (*a == "pull" && name.starts_with("public/")))
            .collect();
        access.push(serde_json::json!({"type": "repository", "name": name, "actions": granted}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let n = issued.fetch_add(1, Ordering::SeqCst);
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user.unwrap_or(""), "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("token-{n}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(rng, signing_input.as_bytes()).unwrap();
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    crate::support::secret(&token);
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    Reply::new(200)
        .header("Content-Type", "application/json")
        .body(body)
}

fn token_registry() -> (Registry, TokenServer, tempfile::TempDir) {
    crate::support::secret(PASSWORD);
    crate::support::secret(IDENTITY_TOKEN);
    crate::support::secret(&STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let keys = tempfile::tempdir().unwrap();
    let server = start_token_server(keys.path());
    let registry = Registry::start_with_auth(&format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        server.realm,
        keys.path().join("token.crt").display()
    ));
    (registry, server, keys)
}

fn with_password(cli: &WasmOci, args: &[&str], password: &str) -> std::process::Output {
    let mut cmd = cli.command();
    // Logged at trace level to the file every line of which is searched for the password
    // and every token the server issued (see `WasmOci`).
    // Before the verb: after `run`'s module, everything is the guest's.
    cmd.args(["--username", USER, "--password-stdin"])
        .args(args);
    output_with_stdin(cmd, password)
}

#[test]
fn a_bearer_token_registry_works_anonymously_and_with_credentials() {
    let (registry, server, _keys) = token_registry();
    let hello = testdata("hello.wasm");
    let public = registry.reference("public/hello:v1");
    let private = registry.reference("team/hello:v1");
    let cli = WasmOci::new();

    // Pushing needs credentials.
    let out = cli.run(&["push", hello.to_str().unwrap(), &public]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refused access"),
        "{}",
        describe(&out)
    );

    for reference in [&public, &private] {
        let out = with_password(
            &cli,
            &["push", hello.to_str().unwrap(), reference],
            PASSWORD,
        );
        assert!(out.status.success(), "{}", describe(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
    }
    assert!(
        server.issued.load(Ordering::SeqCst) > 0,
        "no token was asked for"
    );

    // Anonymous pulls of public repositories get a token too.
    assert_eq!(WasmOci::new().ok(&["run", &public]), HELLO);
    let out = WasmOci::new().run(&["run", &private]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refused access"),
        "{}",
        describe(&out)
    );

    // With credentials, private ones too; a wrong password is refused by the token server.
    let authed = WasmOci::new();
    let out = with_password(&authed, &["run", &private], PASSWORD);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );
    // On a host with no trust store, a plain-HTTP bearer registry works: the token comes
    // over the same client as the rest, which reads trust roots on a TLS handshake only.
    let bare_cli = WasmOci::new();
    let mut cmd = bare_cli.command();
    let _bare = without_trust_store(cmd.args(["run", &public]));
    let out = cmd.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );

    // The token was fetched by the fetcher's own client, and its trace log is searched for
    // secrets with the rest.
    let log = fs::read_to_string(authed.log_file()).unwrap();
    assert!(
        log.contains("asking for a bearer token"),
        "no token request in the trace log"
    );
    let out = with_password(&WasmOci::new(), &["run", &private], "wrong");
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refused access"),
        "{}",
        describe(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
}

#[test]
fn an_identity_token_in_the_docker_config_is_exchanged_for_access() {
    let (registry, _server, _keys) = token_registry();
    let hello = testdata("hello.wasm");
    let private = registry.reference("team/hello:v1");
    let cli = WasmOci::new();
    let docker = tempfile::tempdir().unwrap();
    let config = |token: &str| {
        fs::write(
            docker.path().join("config.json"),
            serde_json::json!({ "auths": { &registry.addr: { "identitytoken": token } } })
                .to_string(),
        )
        .unwrap();
    };
    let with_config = |args: &[&str]| {
        cli.command()
            .args(args)
            .env("DOCKER_CONFIG", docker.path())
            .output()
            .unwrap()
    };

    // Push and pull a private repository with nothing but the identity token.
    config(IDENTITY_TOKEN);
    let out = with_config(&["push", hello.to_str().unwrap(), &private]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = with_config(&["run", "--pull", "always", &private]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );

    // A token the service does not know is refused, and the refusal says where to log in.
    config("not-the-token");
    let out = with_config(&["run", "--pull", "always", &private]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refused access"),
        "{}",
        describe(&out)
    );
}
