#!/bin/sh
# serve-folder DIR [PORT]: serve DIR read-only over HTTP with busybox httpd.
#
# busybox httpd lists no directories, so a small loop rewrites an index page of
# DIR every 10 seconds in a web root of its own (DIR itself may be read-only);
# the files are reached through a symbolic link. httpd runs in the foreground so
# that the container lives as long as the server.
set -eu

dir="${1:?usage: serve-folder DIR [PORT]}"
port="${2:-8080}"
root=/tmp/serve-folder

if [ ! -d "$dir" ]; then
    echo "serve-folder: $dir is not a directory" >&2
    exit 1
fi

mkdir -p "$root"
ln -sfn "$dir" "$root/files"

write_index() {
    {
        echo "<!doctype html><title>$dir</title><h1>$dir</h1><ul>"
        (cd "$dir" && find . -type f | sort) | while read -r f; do
            f="${f#./}"
            echo "<li><a href=\"files/$f\">$f</a></li>"
        done
        echo "</ul>"
    } > "$root/index.html.tmp"
    mv "$root/index.html.tmp" "$root/index.html"
}

write_index
( while sleep 10; do write_index; done ) &

echo "serve-folder: serving $dir on port $port"
exec httpd -f -v -p "0.0.0.0:$port" -h "$root"
