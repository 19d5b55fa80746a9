//! Who the client is when the gateway sits behind load balancers or ingress proxies. Only
//! proxies the platform team names (`--trusted-proxies`) may speak for a client through
//! `X-Forwarded-For`; anything else a client sends there is its own claim and ignored. Without
//! this, every sign-in behind an ingress would share the ingress's address, and one attacker could
//! lock everyone out of the per-address limit; with blind trust, an attacker would pick a fresh
//! address for every guess.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The networks whose connections are proxies that append the address they received from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses and CIDR networks; empty trusts nobody.
    fn from_str(list: &str) -> Result<Self, String> {
        let networks = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR network"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(networks))
    }
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client's address: the connection's peer, unless the peer is a trusted proxy, in which
    /// case the nearest `X-Forwarded-For` hop that is not itself a trusted proxy. Each proxy
    /// appends on the right, so entries left of the first untrusted one may be forged and are
    /// never read. An entry that is not an address stops the walk at the proxy that passed it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(address) = hop.trim().parse::<IpAddr>().map(|a| a.to_canonical()) else { break };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_list_of_addresses_and_networks_parses_and_garbage_is_named() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7 ,fd00::/8,".parse().unwrap();
        assert!(trusted.trusts(ip("10.1.2.3")) && trusted.trusts(ip("192.168.1.7")) && trusted.trusts(ip("fd00::1")));
        assert!(!trusted.trusts(ip("192.168.1.8")));
        assert_eq!("".parse::<TrustedProxies>().unwrap(), TrustedProxies::default());
        let error = "10.0.0.0/8,ingress".parse::<TrustedProxies>().unwrap_err();
        assert!(error.contains("\"ingress\""), "{error}");
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn a_client_that_is_not_a_trusted_proxy_cannot_claim_another_address() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let spoofed = forwarded(&["203.0.113.9"]);
        assert_eq!(trusted.client(ip("198.51.100.1"), &spoofed), ip("198.51.100.1"));
        assert_eq!(TrustedProxies::default().client(ip("10.0.0.1"), &spoofed), ip("10.0.0.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        // The client forged the first entry; the ingress appended the real one.
        let chain = forwarded(&["203.0.113.9, 198.51.100.7", "10.0.0.5"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &chain), ip("198.51.100.7"));
    }

    #[test]
    fn a_trusted_proxy_without_a_forwarded_address_is_the_client_and_garbage_stops_the_walk() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(trusted.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        assert_eq!(trusted.client(ip("10.0.0.2"), &forwarded(&["198.51.100.7, unknown"])), ip("10.0.0.2"));
        assert_eq!(trusted.client(ip("10.0.0.2"), &forwarded(&["10.0.0.3"])), ip("10.0.0.3"));
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_read_as_ipv4() {
        let trusted: TrustedProxies = "127.0.0.1".parse().unwrap();
        assert_eq!(trusted.client(ip("::ffff:127.0.0.1"), &forwarded(&["::ffff:198.51.100.7"])), ip("198.51.100.7"));
    }
}
