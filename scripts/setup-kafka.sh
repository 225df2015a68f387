#!/usr/bin/env bash
# Puts the Apache Kafka 4.4.0 jars (broker, controller, tools and a log4j2 binding) into
# .local/kafka/lib/ from Maven Central through deploy/local/kafka/pom.xml. Skips the download
# when the jars of that pom are already there. Needs a JDK 17+ and Maven (both on this machine).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB=$ROOT/.local/kafka/lib
POM=$ROOT/deploy/local/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
stamp=$LIB/.pom.sha256
want=$(sha256sum "$POM" | cut -d' ' -f1)
if [ -f "$LIB/kafka_2.13-$version.jar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "kafka $version jars present ($LIB)"
  exit 0
fi
command -v java >/dev/null || { echo "java not found: Kafka needs a JDK 17+" >&2; exit 1; }
command -v mvn >/dev/null || { echo "mvn not found: the Kafka jars come through Maven" >&2; exit 1; }
echo "kafka $version: fetching jars from Maven Central into $LIB"
rm -rf "$LIB"
mkdir -p "$LIB"
mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB"
echo "$want" >"$stamp"
echo "kafka $version: $(ls "$LIB"/*.jar | wc -l) jars, $(du -sh "$LIB" | cut -f1)"
