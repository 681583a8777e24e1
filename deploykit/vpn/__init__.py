"""Point-to-site VPN: the certificate authority and the vpn.* tasks."""
