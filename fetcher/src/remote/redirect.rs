//! Redirects, followed by one rule ([`refusal`]): at most [`MAX_REDIRECTS`], only to HTTP
//! or HTTPS, never from HTTPS to plain HTTP (what TLS protected must not continue in clear,
//! where anyone on the path could answer). reqwest's clients follow it through [`policy`];
//! requests that carry a host's own headers follow it through [`follow`], which drops those
//! headers and every credential once a redirect leaves the host's origin.

use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderMap, LOCATION, PROXY_AUTHORIZATION,
};
use reqwest::{StatusCode, Url};

use super::failure::{Failure, violation};
use wasm_oci_artifact::text::printable;

/// Redirects followed before giving up, as browsers and reqwest's default policy do.
pub(crate) const MAX_REDIRECTS: usize = 10;

/// Why a redirect to `to` is refused when `previous` were asked before it (the first request
/// included), or `None` when it may be followed.
pub(crate) fn refusal(to: &Url, previous: &[Url]) -> Option<String> {
    if previous.len() > MAX_REDIRECTS {
        return Some(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let to_text = printable(to.as_str());
    if !matches!(to.scheme(), "http" | "https") {
        return Some(format!(
            "refused a redirect to {to_text}: only HTTP and HTTPS are followed"
        ));
    }
    if to.scheme() != "https" && previous.iter().any(|url| url.scheme() == "https") {
        return Some(format!(
            "refused a redirect from HTTPS to plain HTTP ({to_text}): what TLS protects is not \
             continued in clear"
        ));
    }
    None
}

/// The redirect policy of every client that follows redirects itself: [`refusal`]'s rule.
pub(crate) fn policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| match refusal(attempt.url(), attempt.previous()) {
        Some(why) => attempt.error(why),
        None => attempt.follow(),
    })
}

/// Same scheme, host and port.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Sends `request`, which carries the hosts.toml headers, following redirects as the
/// shared policy does (at most [`MAX_REDIRECTS`], never from HTTPS to plain
/// HTTP), but itself: reqwest would replay every header but `Authorization` and cookies to
/// wherever a redirect points, and the operator's headers (an API key for this host)
/// are for this host's origin only. Once a redirect leaves the origin, the next request
/// carries neither them nor any credentials.
pub(crate) async fn follow(
    direct: &reqwest::Client,
    request: reqwest::Request,
    origin: &Url,
    own_headers: &HeaderMap,
) -> Result<reqwest::Response, Failure> {
    let mut next = request.try_clone();
    let mut response = direct.execute(request).await?;
    let mut visited = vec![response.url().clone()];
    loop {
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let (Some(location), Some(mut request)) = (location, next.take()) else {
            return Ok(response);
        };
        if !matches!(
            status,
            StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::SEE_OTHER
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT
        ) {
            return Ok(response);
        }
        let url = response
            .url()
            .join(&location)
            .map_err(|e| violation(format!("redirect Location {}: {e}", printable(&location))))?;
        if let Some(why) = refusal(&url, &visited) {
            return Err(violation(why));
        }
        // As reqwest: 303, and 301/302 of a POST, become a GET without a body.
        let method = request.method().clone();
        if status == StatusCode::SEE_OTHER && method != reqwest::Method::HEAD
            || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                && method == reqwest::Method::POST
        {
            *request.method_mut() = reqwest::Method::GET;
            *request.body_mut() = None;
            request.headers_mut().remove(CONTENT_LENGTH);
            request.headers_mut().remove(CONTENT_TYPE);
        }
        if !same_origin(&url, origin) {
            let headers = request.headers_mut();
            for name in own_headers.keys() {
                headers.remove(name);
            }
            for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
                headers.remove(name);
            }
            tracing::debug!(
                url = %printable(url.as_str()),
                "redirected off the host's origin: followed without its headers or credentials"
            );
        }
        *request.url_mut() = url.clone();
        next = request.try_clone();
        response = direct.execute(request).await?;
        visited.push(url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_registrys_own_origin_is_its_own() {
        let origin = Url::parse("https://registry.example/").unwrap();
        for (url, same) in [
            ("https://registry.example/v2/x/blobs/uploads/1", true),
            ("https://registry.example:443/v2/", true),
            ("http://registry.example/v2/", false),
            ("https://registry.example:5000/v2/", false),
            ("https://storage.example/v2/", false),
            ("https://registry.example.evil/v2/", false),
        ] {
            assert_eq!(
                same_origin(&Url::parse(url).unwrap(), &origin),
                same,
                "{url}"
            );
        }
    }

    #[test]
    fn redirects_are_refused_past_ten_to_other_schemes_and_down_to_plain_http() {
        let url = |u: &str| Url::parse(u).unwrap();
        let https = url("https://registry.example/v2/x/blobs/sha256:0");
        let cdn = url("https://cdn.example/blob");
        assert_eq!(refusal(&cdn, std::slice::from_ref(&https)), None);
        let ten: Vec<Url> = (0..MAX_REDIRECTS).map(|_| https.clone()).collect();
        assert_eq!(refusal(&cdn, &ten), None, "the tenth redirect is followed");
        let eleven: Vec<Url> = (0..=MAX_REDIRECTS).map(|_| https.clone()).collect();
        assert!(
            refusal(&cdn, &eleven)
                .unwrap()
                .contains("more than 10 redirects")
        );
        let down = refusal(
            &url("http://cdn.example/blob"),
            std::slice::from_ref(&https),
        )
        .unwrap();
        assert!(down.contains("redirect from HTTPS to plain HTTP"), "{down}");
        assert_eq!(
            refusal(
                &url("http://cdn.example/blob"),
                &[url("http://registry.example/")]
            ),
            None,
            "plain HTTP throughout is the registry's own choice"
        );
        let ftp = refusal(&url("ftp://cdn.example/blob"), &[https]).unwrap();
        assert!(ftp.contains("only HTTP and HTTPS"), "{ftp}");
    }
}
