#!/usr/bin/env bash
# Puts Apicurio Registry 3.x (the built Quarkus application, from Maven Central through
# deploy/local/apicurio/pom.xml) into .local/apicurio/app/ and records a Java 21+ to run it with
# in .local/apicurio/java, for tests/tests/apicurio_interop.rs. Skips the download when that
# pom's application is already there. About 160 MB from Maven Central, 170 MB unpacked (the
# tarball is removed after unpacking).
#
# Java: $APICURIO_JAVA if set, else the first JDK 21+ among `java` on PATH and
# /usr/lib/jvm/*/bin/java (newest first). Apicurio 3.x is compiled for Java 21; Java 17 refuses it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/.local/apicurio
APP=$DIR/app
POM=$ROOT/deploy/local/apicurio/pom.xml
version=$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$POM")
stamp=$DIR/.pom.sha256
want=$(sha256sum "$POM" | cut -d' ' -f1)

java_major() {
  "$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p'
}

find_java() {
  local candidates=() c major
  if [ -n "${APICURIO_JAVA:-}" ]; then
    candidates+=("$APICURIO_JAVA")
  else
    if command -v java >/dev/null; then candidates+=("$(command -v java)"); fi
    while IFS= read -r c; do candidates+=("$c"); done < <(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV)
  fi
  for c in "${candidates[@]}"; do
    [ -x "$c" ] || continue
    major=$(java_major "$c")
    if [ -n "$major" ] && [ "$major" -ge 21 ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

echo "apicurio $version: looking for a Java 21+"
if ! JAVA=$(find_java); then
  if [ -n "${APICURIO_JAVA:-}" ]; then
    echo "apicurio $version needs Java 21 or newer (class file 65): APICURIO_JAVA=$APICURIO_JAVA is not" >&2
  else
    echo "apicurio $version needs Java 21 or newer (class file 65); none found on PATH or under" >&2
    echo "/usr/lib/jvm. Install a JDK 21+ or set APICURIO_JAVA=/path/to/bin/java." >&2
  fi
  exit 1
fi
echo "apicurio $version: java $(java_major "$JAVA") at $JAVA"
mkdir -p "$DIR"
echo "$JAVA" >"$DIR/java"

if [ -f "$APP/quarkus-run.jar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "apicurio $version present ($APP)"
  exit 0
fi
command -v mvn >/dev/null || { echo "mvn not found: Apicurio comes through Maven" >&2; exit 1; }

download=$DIR/download
rm -rf "$download" "$APP" "$APP.partial" "$stamp"
mkdir -p "$download" "$APP.partial"
echo "apicurio $version: fetching io.apicurio:apicurio-registry-app:$version:tar.gz:all from Maven Central (about 160 MB)"
# A Maven repository of its own, removed below: the tarball is needed once, so it does not
# stay behind in ~/.m2 as a second copy.
if ! out=$(mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$download/m2" -f "$POM" \
  dependency:copy-dependencies -DoutputDirectory="$download" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "apicurio $version: unpacking into $APP"
tar -xzf "$download/apicurio-registry-app-$version-all.tar.gz" -C "$APP.partial"
[ -f "$APP.partial/quarkus-run.jar" ] || { echo "apicurio $version: the tarball has no quarkus-run.jar" >&2; exit 1; }
mv "$APP.partial" "$APP"
rm -rf "$download"
echo "$want" >"$stamp"
echo "apicurio $version: $(du -sh "$APP" | cut -f1) in $APP"
echo "apicurio $version: run it with $JAVA -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port=8080 -Dquarkus.management.host=127.0.0.1 -jar $APP/quarkus-run.jar (Confluent API at http://127.0.0.1:8080/apis/ccompat/v7)"
