#!/usr/bin/env python3
"""Config text for a shoal with many sites: ROUTES more routes on the first server, then
NAMES more servers sharing its address, each with one name and one route.

    many_sites.py NAMES ROUTES > extra.toml

Appended to scripts/bench/servers.sh's config (`{listen}` is its address), the first server
stays the address's default and its `/` route still answers the benchmark's requests, which
now go through the name and route tables. The routes answer fixed bodies, so the text
needs no directory or upstream.
"""

import sys


def main():
    names, routes = int(sys.argv[1]), int(sys.argv[2])
    out = []
    for i in range(routes):
        out.append(f'[[server.route]]\nprefix = "/section/{i}/"\nrespond = {{ body = "route {i}" }}\n')
    for i in range(names):
        out.append(
            f'[[server]]\nlisten = ["{{listen}}"]\nnames = ["site{i}.example", "*.site{i}.example"]\n'
            f'[[server.route]]\nprefix = "/"\nrespond = {{ body = "site {i}" }}\n'
        )
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
