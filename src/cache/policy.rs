//! RFC 9111 for a shared cache: which upstream responses may be stored, how long one stays
//! fresh, and how long a stale one may still be served, while one refresh runs
//! (stale-while-revalidate) or when the upstream fails (stale-if-error, RFC 5861).
//!
//! Pure functions of header values and of times in whole Unix seconds (HTTP dates have no
//! finer grain): tested without a clock or a socket. What a request asks of the cache
//! (`Cache-Control: no-cache`, `max-age=0`) does not bypass it, as with nginx and Varnish: the
//! cache is there to shield the app, and any client could otherwise send every request
//! through. A request's `no-store` is honoured (its response is not stored).

/// The Cache-Control directives shoal acts on (RFC 9111 §5.2, RFC 5861 §3, §4). Unknown ones
/// are ignored, as the RFC asks. Conflicting values resolve to the more restrictive one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    /// Also in its qualified form (`no-cache="Set-Cookie"`), treated as the whole directive.
    pub no_cache: bool,
    /// Also in its qualified form, treated as the whole directive: not stored.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

/// delta-seconds past this are this (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

impl Directives {
    /// Adds the directives of one Cache-Control field line (there may be several).
    pub fn add(&mut self, value: &[u8]) {
        for item in split_list(value) {
            let (name, argument) = match item.iter().position(|&b| b == b'=') {
                Some(eq) => (trim(&item[..eq]), Some(unquote(trim(&item[eq + 1..])))),
                None => (item, None),
            };
            // A malformed number makes the response stale at once (the safe reading).
            let seconds = || Some(argument.and_then(delta_seconds).unwrap_or(0));
            let name = name.to_ascii_lowercase();
            match name.as_slice() {
                b"no-store" => self.no_store = true,
                b"no-cache" => self.no_cache = true,
                b"private" => self.private = true,
                b"public" => self.public = true,
                b"must-revalidate" => self.must_revalidate = true,
                b"proxy-revalidate" => self.proxy_revalidate = true,
                b"max-age" => self.max_age = least(self.max_age, seconds()),
                b"s-maxage" => self.s_maxage = least(self.s_maxage, seconds()),
                b"stale-while-revalidate" => {
                    self.stale_while_revalidate = least(self.stale_while_revalidate, seconds())
                }
                b"stale-if-error" => self.stale_if_error = least(self.stale_if_error, seconds()),
                _ => {}
            }
        }
    }

    pub fn parse(value: &[u8]) -> Directives {
        let mut directives = Directives::default();
        directives.add(value);
        directives
    }
}

fn least(current: Option<u64>, new: Option<u64>) -> Option<u64> {
    match (current, new) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What of a request the storing rules look at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// GET: only its responses are stored (HEAD is answered from them).
    pub get: bool,
    /// The request carried `Authorization`.
    pub authorization: bool,
    pub directives: Directives,
}

/// What of an upstream response the storing rules look at; times in Unix seconds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseFacts {
    pub status: u16,
    pub directives: Directives,
    pub date: Option<u64>,
    /// `Expires`; a value that is not a date is in the past (RFC 9111 §5.3), here 0.
    pub expires: Option<u64>,
    pub age: Option<u64>,
    pub set_cookie: bool,
    /// `Vary: *`: no request can be matched to it.
    pub vary_star: bool,
}

/// The route's settings (`cache_ttl`, `stale_while_revalidate`, `stale_if_error`), in
/// seconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Freshness for responses that state none (micro-caching); without it they are not
    /// stored.
    pub ttl: Option<u64>,
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Not a GET.
    Method,
    /// 206, 304, or a status not cacheable by default without explicit freshness.
    Status,
    /// The request said `no-store`.
    RequestNoStore,
    NoStore,
    Private,
    SetCookie,
    /// The request carried `Authorization` and the response did not say `public`,
    /// `s-maxage` or `must-revalidate` (RFC 9111 §3.5).
    Authorization,
    VaryStar,
    /// No explicit freshness, and the route has no `cache_ttl`.
    NoFreshness,
}

impl NotStored {
    /// The words of Cache-Status's `detail`.
    pub fn detail(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::Authorization => "authorization",
            NotStored::VaryStar => "vary-star",
            NotStored::NoFreshness => "no-freshness",
        }
    }
}

/// How a stored response ages, fixed when it is stored (and again when a 304 refreshes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When the response arrived, in Unix seconds.
    pub stored_at: u64,
    /// Its age on arrival (RFC 9111 §4.2.3's corrected_initial_age).
    pub initial_age: u64,
    /// It is fresh while its age is under this; 0 for `no-cache` (revalidated before each use).
    pub lifetime: u64,
    /// Seconds past its lifetime it may be served while one refresh runs.
    pub stale_while_revalidate: u64,
    /// Seconds past its lifetime it may be served when the upstream fails.
    pub stale_if_error: u64,
}

/// What a stored response may be used for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    Fresh,
    /// Stale, but it may answer while one refresh runs.
    WhileRevalidating,
    /// Stale: revalidate it (or fetch anew) before it answers.
    Stale,
}

impl Freshness {
    /// Its age at `now` (RFC 9111 §4.2.3's current_age).
    pub fn age(&self, now: u64) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_sub(self.stored_at))
    }

    pub fn usable(&self, now: u64) -> Usable {
        let age = self.age(now);
        if age < self.lifetime {
            Usable::Fresh
        } else if age < self.lifetime.saturating_add(self.stale_while_revalidate) {
            Usable::WhileRevalidating
        } else {
            Usable::Stale
        }
    }

    /// It may answer in place of an upstream that failed.
    pub fn serves_on_error(&self, now: u64) -> bool {
        self.age(now) < self.lifetime.saturating_add(self.stale_if_error)
    }
}

/// Statuses cacheable by default (RFC 9110 §15.1), but 206: shoal stores whole responses.
fn cacheable_by_default(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether the response to `request` may be stored, and if so how it ages. `requested_at`
/// and `received_at` are when the request went upstream and when the response head came.
pub fn assess(
    request: &RequestFacts,
    response: &ResponseFacts,
    rules: &Rules,
    requested_at: u64,
    received_at: u64,
) -> Result<Freshness, NotStored> {
    let given = &response.directives;
    if !request.get {
        return Err(NotStored::Method);
    }
    if !(200..600).contains(&response.status) || matches!(response.status, 206 | 304) {
        return Err(NotStored::Status);
    }
    let refusal = [
        (request.directives.no_store, NotStored::RequestNoStore),
        (given.no_store, NotStored::NoStore),
        (given.private, NotStored::Private),
        (response.set_cookie, NotStored::SetCookie),
        (response.vary_star, NotStored::VaryStar),
        (
            request.authorization && !(given.public || given.s_maxage.is_some() || given.must_revalidate),
            NotStored::Authorization,
        ),
    ];
    if let Some(&(_, why)) = refusal.iter().find(|(refused, _)| *refused) {
        return Err(why);
    }
    let date = response.date.unwrap_or(received_at);
    let explicit = given
        .s_maxage
        .or(given.max_age)
        .or(response.expires.map(|expires| expires.saturating_sub(date)));
    let lifetime = match (explicit, rules.ttl) {
        (Some(lifetime), _) => lifetime,
        (None, Some(ttl)) if cacheable_by_default(response.status) => ttl,
        (None, Some(_)) => return Err(NotStored::Status),
        (None, None) => return Err(NotStored::NoFreshness),
    };
    // These forbid serving it stale at all (RFC 9111 §4.2.4; s-maxage implies
    // proxy-revalidate, §5.2.2.10).
    let never_stale =
        given.no_cache || given.must_revalidate || given.proxy_revalidate || given.s_maxage.is_some();
    let window = |own: Option<u64>, route: u64| if never_stale { 0 } else { own.unwrap_or(route) };
    let apparent_age = received_at.saturating_sub(date);
    let corrected_age = response
        .age
        .unwrap_or(0)
        .saturating_add(received_at.saturating_sub(requested_at));
    Ok(Freshness {
        stored_at: received_at,
        initial_age: apparent_age.max(corrected_age),
        lifetime: if given.no_cache { 0 } else { lifetime },
        stale_while_revalidate: window(given.stale_while_revalidate, rules.stale_while_revalidate),
        stale_if_error: window(given.stale_if_error, rules.stale_if_error),
    })
}

/// The elements of a comma-separated list, trimmed, empty ones skipped; commas inside quoted
/// strings do not split.
fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let mut escaped = false;
        let end = rest
            .iter()
            .position(|&b| {
                let split = b == b',' && !quoted;
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    _ => {}
                }
                split
            })
            .unwrap_or(rest.len());
        let item = trim(&rest[..end]);
        rest = rest.get(end + 1..).unwrap_or_default();
        if !item.is_empty() {
            return Some(item);
        }
    })
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// A delta-seconds value; `None` unless all digits.
pub fn delta_seconds(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |total, &digit| {
        total
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
            .min(MAX_DELTA_SECONDS)
    }))
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn get() -> RequestFacts {
        RequestFacts {
            get: true,
            ..RequestFacts::default()
        }
    }

    fn ok(cache_control: &str) -> ResponseFacts {
        ResponseFacts {
            status: 200,
            directives: Directives::parse(cache_control.as_bytes()),
            date: Some(NOW),
            ..ResponseFacts::default()
        }
    }

    fn assess_now(
        request: &RequestFacts,
        response: &ResponseFacts,
        rules: &Rules,
    ) -> Result<Freshness, NotStored> {
        assess(request, response, rules, NOW, NOW)
    }

    #[test]
    fn directives_parse_with_quotes_case_and_repeats() {
        let d = Directives::parse(
            br#"Public, MAX-AGE=60, no-cache="Set-Cookie, X-Y", s-maxage="30", max-age=10"#,
        );
        assert!(d.public && d.no_cache);
        assert_eq!(d.max_age, Some(10), "the more restrictive of two");
        assert_eq!(d.s_maxage, Some(30), "a quoted number is read");
        let d = Directives::parse(b"max-age=soon, ,stale-if-error=99999999999999");
        assert_eq!(d.max_age, Some(0), "a malformed number means stale");
        assert_eq!(d.stale_if_error, Some(MAX_DELTA_SECONDS));
        assert_eq!(
            Directives::parse(b"community=\"UCI\", foo"),
            Directives::default()
        );
    }

    #[test]
    fn explicit_freshness_in_order_s_maxage_max_age_expires() {
        let rules = Rules::default();
        let lifetime = |response: &ResponseFacts| assess_now(&get(), response, &rules).map(|f| f.lifetime);
        assert_eq!(lifetime(&ok("max-age=60, s-maxage=5")), Ok(5));
        assert_eq!(lifetime(&ok("max-age=60")), Ok(60));
        let expires = ResponseFacts {
            expires: Some(NOW + 90),
            ..ok("")
        };
        assert_eq!(lifetime(&expires), Ok(90));
        let expires_with_max_age = ResponseFacts {
            expires: Some(NOW + 90),
            ..ok("max-age=7")
        };
        assert_eq!(
            lifetime(&expires_with_max_age),
            Ok(7),
            "max-age wins over Expires"
        );
        let expired = ResponseFacts {
            expires: Some(0),
            ..ok("")
        };
        assert_eq!(lifetime(&expired), Ok(0), "an invalid Expires is in the past");
        assert_eq!(lifetime(&ok("")), Err(NotStored::NoFreshness));
    }

    #[test]
    fn cache_ttl_gives_freshness_to_default_cacheable_statuses_only() {
        let rules = Rules {
            ttl: Some(1),
            ..Rules::default()
        };
        assert_eq!(assess_now(&get(), &ok(""), &rules).map(|f| f.lifetime), Ok(1));
        let not_found = ResponseFacts {
            status: 404,
            ..ok("")
        };
        assert_eq!(assess_now(&get(), &not_found, &rules).map(|f| f.lifetime), Ok(1));
        let error = ResponseFacts {
            status: 500,
            ..ok("")
        };
        assert_eq!(assess_now(&get(), &error, &rules), Err(NotStored::Status));
        let error_with_max_age = ResponseFacts {
            status: 500,
            ..ok("max-age=3")
        };
        assert_eq!(
            assess_now(&get(), &error_with_max_age, &rules).map(|f| f.lifetime),
            Ok(3)
        );
        let explicit = assess_now(&get(), &ok("max-age=30"), &rules).map(|f| f.lifetime);
        assert_eq!(explicit, Ok(30), "explicit freshness beats cache_ttl");
    }

    #[test]
    fn what_is_never_stored() {
        let rules = Rules {
            ttl: Some(60),
            ..Rules::default()
        };
        let head = RequestFacts { get: false, ..get() };
        assert_eq!(
            assess_now(&head, &ok("max-age=60"), &rules),
            Err(NotStored::Method)
        );
        for status in [100, 206, 304] {
            let response = ResponseFacts {
                status,
                ..ok("max-age=60")
            };
            assert_eq!(
                assess_now(&get(), &response, &rules),
                Err(NotStored::Status),
                "{status}"
            );
        }
        assert_eq!(
            assess_now(&get(), &ok("no-store, max-age=60"), &rules),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            assess_now(&get(), &ok("private, max-age=60"), &rules),
            Err(NotStored::Private)
        );
        assert_eq!(
            assess_now(&get(), &ok("private=\"X\""), &rules),
            Err(NotStored::Private)
        );
        let cookie = ResponseFacts {
            set_cookie: true,
            ..ok("max-age=60")
        };
        assert_eq!(assess_now(&get(), &cookie, &rules), Err(NotStored::SetCookie));
        let vary_star = ResponseFacts {
            vary_star: true,
            ..ok("max-age=60")
        };
        assert_eq!(assess_now(&get(), &vary_star, &rules), Err(NotStored::VaryStar));
        let no_store_request = RequestFacts {
            directives: Directives::parse(b"no-store"),
            ..get()
        };
        assert_eq!(
            assess_now(&no_store_request, &ok("max-age=60"), &rules),
            Err(NotStored::RequestNoStore)
        );
    }

    #[test]
    fn authorization_needs_the_response_to_allow_sharing() {
        let rules = Rules::default();
        let authorized = RequestFacts {
            authorization: true,
            ..get()
        };
        assert_eq!(
            assess_now(&authorized, &ok("max-age=60"), &rules),
            Err(NotStored::Authorization)
        );
        for allowing in ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"] {
            assert!(
                assess_now(&authorized, &ok(allowing), &rules).is_ok(),
                "{allowing}"
            );
        }
    }

    #[test]
    fn age_counts_the_upstream_s_age_the_trip_and_the_time_stored() {
        let response = ResponseFacts {
            age: Some(10),
            date: Some(NOW - 30),
            ..ok("max-age=100")
        };
        let freshness = assess(&get(), &response, &Rules::default(), NOW - 2, NOW).expect("stored");
        assert_eq!(
            freshness.initial_age, 30,
            "the Date is older than Age plus the trip"
        );
        let response = ResponseFacts {
            age: Some(50),
            ..ok("max-age=100")
        };
        let freshness = assess(&get(), &response, &Rules::default(), NOW - 2, NOW).expect("stored");
        assert_eq!(freshness.initial_age, 52, "Age plus the trip");
        assert_eq!(freshness.age(NOW + 8), 60);
        assert_eq!(freshness.usable(NOW + 47), Usable::Fresh);
        assert_eq!(freshness.usable(NOW + 48), Usable::Stale);
        let future_date = ResponseFacts {
            date: Some(NOW + 500),
            ..ok("max-age=100")
        };
        let freshness = assess_now(&get(), &future_date, &Rules::default()).expect("stored");
        assert_eq!(
            freshness.initial_age, 0,
            "a clock ahead of ours makes no negative age"
        );
    }

    #[test]
    fn stale_windows_from_the_response_else_the_route() {
        let rules = Rules {
            stale_while_revalidate: 30,
            stale_if_error: 600,
            ..Rules::default()
        };
        let route = assess_now(&get(), &ok("max-age=10"), &rules).expect("stored");
        assert_eq!((route.stale_while_revalidate, route.stale_if_error), (30, 600));
        assert_eq!(route.usable(NOW + 9), Usable::Fresh);
        assert_eq!(route.usable(NOW + 10), Usable::WhileRevalidating);
        assert_eq!(route.usable(NOW + 40), Usable::Stale);
        assert!(route.serves_on_error(NOW + 609) && !route.serves_on_error(NOW + 610));
        let own = "max-age=10, stale-while-revalidate=5, stale-if-error=0";
        let own = assess_now(&get(), &ok(own), &rules).expect("stored");
        assert_eq!(
            (own.stale_while_revalidate, own.stale_if_error),
            (5, 0),
            "the response's own win"
        );
    }

    #[test]
    fn revalidation_directives_forbid_stale_answers() {
        let rules = Rules {
            stale_while_revalidate: 30,
            stale_if_error: 600,
            ..Rules::default()
        };
        for strict in [
            "max-age=10, must-revalidate",
            "max-age=10, proxy-revalidate",
            "s-maxage=10",
        ] {
            let freshness = assess_now(&get(), &ok(strict), &rules).expect("stored");
            assert_eq!(
                (freshness.stale_while_revalidate, freshness.stale_if_error),
                (0, 0),
                "{strict}"
            );
        }
        let no_cache = assess_now(&get(), &ok("no-cache, max-age=60"), &rules).expect("stored");
        assert_eq!(no_cache.lifetime, 0, "no-cache: revalidated before each use");
        assert_eq!(no_cache.usable(NOW), Usable::Stale);
        assert!(!no_cache.serves_on_error(NOW));
    }

    #[test]
    fn delta_seconds_are_digits_only() {
        assert_eq!(delta_seconds(b"0"), Some(0));
        assert_eq!(delta_seconds(b"120"), Some(120));
        for bad in [&b""[..], b"-1", b"1.5", b" 1", b"1s"] {
            assert_eq!(delta_seconds(bad), None, "{bad:?}");
        }
    }
}
