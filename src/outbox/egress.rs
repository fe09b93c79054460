//! The egress policy: which addresses deliveries may connect to, checked on the address a
//! connection is actually made to — the result of DNS resolution inside reqwest (a custom
//! resolver), or the literal address in the URL — so a host name that resolves to a denied
//! address (DNS rebinding included) is refused like the address itself.
//!
//! Internal networks are denied by default ([`DEFAULT_DENY`]: loopback, private, CGNAT, ULA,
//! link-local, multicast, reserved and the cloud metadata addresses). An IPv6 address that
//! carries an IPv4 address (IPv4-mapped, IPv4-compatible, SIIT, NAT64, 6to4, Teredo) is judged
//! as that IPv4 address too, so `::ffff:127.0.0.1` or `64:ff9b::a00:1` cannot reach what
//! `127.0.0.1` or `10.0.0.1` may not.
//!
//! Rules are CIDR ranges: the default denials, the operator's `--egress-deny` and
//! `--egress-allow`. The most specific range containing an address decides; on a tie the
//! operator's deny beats an allow, which beats a default denial (so `--egress-allow
//! 127.0.0.0/8` opens exactly that default range). An address no range contains is allowed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Ranges denied unless `--egress-allow` names them (or a range inside them).
pub const DEFAULT_DENY: &[&str] = &[
    // IPv4: "this network" (0.0.0.0 included), private, CGNAT (Alibaba's metadata service,
    // 100.100.100.200, is in it), loopback, link-local (the metadata service of AWS, GCP, Azure
    // and OCI, 169.254.169.254, and ECS's 169.254.170.2), IETF assignments (OCI's 192.0.0.192),
    // benchmarking, multicast, reserved and broadcast.
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    // Azure's platform endpoint (wireserver), a public address that only answers from inside.
    "168.63.129.16/32",
    // IPv6: unspecified, loopback, unique local (AWS's metadata service, fd00:ec2::254, is in
    // it), link-local, the former site-local, multicast, and the local-use NAT64 prefix.
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "64:ff9b:1::/48",
];

/// Denied and allowed ranges.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    defaults: Vec<IpNet>,
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy::new(Vec::new(), Vec::new())
    }
}

impl EgressPolicy {
    /// The default denials, the operator's `deny`, and `allow`.
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        let defaults = DEFAULT_DENY.iter().filter_map(|c| c.parse().ok()).collect();
        EgressPolicy {
            defaults,
            deny,
            allow,
        }
    }

    /// Parses a comma-separated CIDR list (a bare address is a single-address range).
    pub fn parse_list(list: &str) -> Result<Vec<IpNet>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("{s:?} is not a CIDR range (e.g. 10.0.0.0/8) or an address")
                    })
            })
            .collect()
    }

    /// Whether a connection to `ip` is allowed: the address and every IPv4 address it carries
    /// must each be allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        judged(ip).into_iter().all(|a| self.allows_one(a))
    }

    fn allows_one(&self, ip: IpAddr) -> bool {
        // (prefix length, rank): the longest prefix decides, the rank breaks a tie.
        let best = |nets: &[IpNet], rank: u8| {
            nets.iter()
                .filter(|n| n.contains(&ip))
                .map(|n| (n.prefix_len(), rank))
                .max()
        };
        let decisive = [
            best(&self.defaults, 0).map(|k| (k, false)),
            best(&self.allow, 1).map(|k| (k, true)),
            best(&self.deny, 2).map(|k| (k, false)),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|(k, _)| *k);
        decisive.is_none_or(|(_, allowed)| allowed)
    }
}

/// The addresses a connection to `ip` reaches in effect: an IPv4 address written as IPv6
/// (mapped, compatible) is that IPv4 address alone; a translation or tunnel address (SIIT,
/// NAT64, 6to4, Teredo) is itself and the IPv4 address it embeds.
fn judged(ip: IpAddr) -> Vec<IpAddr> {
    let v6 = match ip {
        IpAddr::V4(_) => return vec![ip],
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    let v4 = |a: Ipv4Addr| IpAddr::V4(a);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated; :: and ::1 are IPv6's own).
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return vec![v4(low32)];
    }
    if s[..6] == [0; 6] && bits > 1 {
        return vec![v4(low32)];
    }
    let mut out = vec![ip];
    // ::ffff:0:a.b.c.d (SIIT, RFC 2765).
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        out.push(v4(low32));
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        out.push(v4(low32));
    }
    // Local-use NAT64 64:ff9b:1::/48 (RFC 8215): the address after a /96 prefix, and after a
    // /48 prefix (RFC 6052 §2.2: bits 48–63 and 72–87, around the reserved octet).
    if s[..3] == [0x64, 0xff9b, 1] {
        out.push(v4(low32));
        let o = v6.octets();
        out.push(v4(Ipv4Addr::new(o[6], o[7], o[9], o[10])));
    }
    // 6to4 2002:a.b.c.d::/48 (RFC 3056).
    if s[0] == 0x2002 {
        out.push(v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32)));
    }
    // Teredo 2001:0::/32 (RFC 4380): the server in bits 32–63, the client inverted in the last 32.
    if s[0] == 0x2001 && s[1] == 0 {
        out.push(v4(Ipv4Addr::from(((bits >> 64) & 0xffff_ffff) as u32)));
        out.push(v4(Ipv4Addr::from(!(bits as u32))));
    }
    out
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("egress policy refused {host}: every address it resolves to is denied ({addrs})")]
pub struct EgressDenied {
    host: String,
    addrs: String,
}

/// reqwest's resolver, filtered by the policy.
pub struct PolicyResolver(pub Arc<EgressPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(resolve_allowed(self.0.clone(), name.as_str().to_owned()))
    }
}

/// The addresses `host` resolves to that the policy allows; an error naming the denied ones
/// when none is left.
async fn resolve_allowed(
    policy: Arc<EgressPolicy>,
    host: String,
) -> Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let (ok, denied): (Vec<SocketAddr>, Vec<SocketAddr>) =
        found.into_iter().partition(|a| policy.allows(a.ip()));
    if ok.is_empty() {
        let addrs: Vec<String> = denied.iter().map(|a| a.ip().to_string()).collect();
        let addrs = if addrs.is_empty() {
            "none found".to_owned()
        } else {
            addrs.join(", ")
        };
        return Err(Box::new(EgressDenied { host, addrs }));
    }
    Ok(Box::new(ok.into_iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_networks_and_every_ipv6_form_of_them_are_denied_by_default() {
        let p = EgressPolicy::default();
        for denied in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "169.254.169.254",
            "169.254.170.2",
            "192.0.0.192",
            "168.63.129.16",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            // IPv4-mapped, -compatible and SIIT forms.
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:10.0.0.1",
            // NAT64, well-known and local-use (/96 and /48 layouts).
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::8.8.8.8",
            // 6to4 and Teredo (client 127.0.0.1 is stored inverted: 80ff:fffe).
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:808:808::80ff:fffe",
        ] {
            assert!(!p.allows(ip(denied)), "{denied} must be denied");
        }
        for allowed in [
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(p.allows(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn an_allow_opens_a_default_range_and_the_operators_deny_wins_a_tie() {
        let p = EgressPolicy::new(
            Vec::new(),
            EgressPolicy::parse_list("127.0.0.0/8, ::1, 169.254.169.254").unwrap(),
        );
        assert!(p.allows(ip("127.0.0.1")));
        assert!(p.allows(ip("::ffff:127.0.0.1")));
        assert!(p.allows(ip("64:ff9b::127.0.0.1")));
        assert!(p.allows(ip("::1")));
        assert!(p.allows(ip("169.254.169.254")));
        assert!(!p.allows(ip("169.254.169.253")));
        assert!(!p.allows(ip("10.0.0.1")));
        let p = EgressPolicy::new(
            EgressPolicy::parse_list("0.0.0.0/0, 10.0.0.0/8").unwrap(),
            EgressPolicy::parse_list("10.1.0.0/16,10.0.0.0/8").unwrap(),
        );
        assert!(p.allows(ip("10.1.2.3")));
        assert!(!p.allows(ip("10.2.0.1")), "the operator's deny wins a tie");
        assert!(!p.allows(ip("8.8.8.8")));
        assert!(EgressPolicy::parse_list("10.0.0.0/33").is_err());
    }
}
