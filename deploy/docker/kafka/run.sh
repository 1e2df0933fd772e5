#!/bin/bash
# Write server.properties from KAFKA_* variables (the official image's convention: strip KAFKA_,
# lower-case, "___" -> "-", "__" -> "_", "_" -> "."), format the storage once, then exec the
# broker so it receives SIGTERM directly.
set -euo pipefail
config=/opt/kafka/config/server.properties
: >"$config"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key="${name#KAFKA_}"
  key="${key,,}"
  key="${key//___/-}"
  key="${key//__/@}"
  key="${key//_/.}"
  key="${key//@/_}"
  echo "$key=$value" >>"$config"
done < <(env)
grep -q '^log.dirs=' "$config" || echo "log.dirs=/var/lib/kafka/data" >>"$config"
log_dirs="$(sed -n 's/^log.dirs=//p' "$config" | cut -d, -f1)"
java=(java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m} -XX:+UseSerialGC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=/opt/kafka/log4j2.properties" ${KAFKA_OPTS:-} -cp "/opt/kafka/libs/*")
if [ ! -f "$log_dirs/meta.properties" ]; then
  "${java[@]}" kafka.tools.StorageTool format "--cluster-id=${CLUSTER_ID:?set CLUSTER_ID}" \
    "--config=$config" --ignore-formatted
fi
exec "${java[@]}" kafka.Kafka "$config"
