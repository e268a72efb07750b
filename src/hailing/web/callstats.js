// Live call stats: one compact summary of an RTCStatsReport (getStats), for the stats
// panel and for tests. Pure: no DOM, no peer connection.
//
// summarizeStats(report, prev, now) -> {at, rttMs, sendKbps, recvKbps, lossPct, codecs,
// path: {local, remote, protocol, relayProtocol, localAddress, remoteAddress},
// framesDecoded, framesPerSecond, resolution, bytesSent, bytesReceived, packetsReceived,
// packetsLost}. Rates (kbps, loss over the interval) need the previous summary `prev`.
// The path is the selected candidate pair's candidate types: host, srflx, prflx, relay.

// A compact summary of an RTCStatsReport; `prev` is the previous summary (for bitrates).
export function summarizeStats(report, prev = null, now = performance.now()) {
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const out = {
    at: now, rttMs: null, sendKbps: null, recvKbps: null, lossPct: null,
    codecs: {}, path: null, framesDecoded: 0, framesPerSecond: null, resolution: null,
    bytesSent: 0, bytesReceived: 0, packetsReceived: 0, packetsLost: 0,
  };
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = pair || s;
    });
  }
  if (pair) {
    const local = byId.get(pair.localCandidateId) || {};
    const remote = byId.get(pair.remoteCandidateId) || {};
    out.path = {
      local: local.candidateType || "?", remote: remote.candidateType || "?",
      protocol: local.protocol || "", relayProtocol: local.relayProtocol || "",
      localAddress: local.address ? `${local.address}:${local.port}` : "",
      remoteAddress: remote.address ? `${remote.address}:${remote.port}` : "",
    };
    if (typeof pair.currentRoundTripTime === "number") out.rttMs = pair.currentRoundTripTime * 1000;
  }
  let remoteRtt = null;
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && !s.isRemote) {
      out.bytesSent += s.bytesSent || 0;
      const codec = byId.get(s.codecId);
      if (codec && s.kind) out.codecs[`send ${s.kind}`] = codecName(codec);
    } else if (s.type === "inbound-rtp" && !s.isRemote) {
      out.bytesReceived += s.bytesReceived || 0;
      out.packetsReceived += s.packetsReceived || 0;
      out.packetsLost += Math.max(0, s.packetsLost || 0);
      const codec = byId.get(s.codecId);
      if (codec && s.kind) out.codecs[`recv ${s.kind}`] = codecName(codec);
      if (s.kind === "video") {
        out.framesDecoded += s.framesDecoded || 0;
        if (typeof s.framesPerSecond === "number") out.framesPerSecond = s.framesPerSecond;
        if (s.frameWidth) out.resolution = `${s.frameWidth}×${s.frameHeight}`;
      }
    } else if (s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") {
      remoteRtt = s.roundTripTime * 1000;
    }
  });
  if (out.rttMs === null && remoteRtt !== null) out.rttMs = remoteRtt;
  const total = out.packetsReceived + out.packetsLost;
  out.lossPct = total > 0 ? (100 * out.packetsLost) / total : 0;
  if (prev && now > prev.at) {
    const secs = (now - prev.at) / 1000;
    out.sendKbps = Math.max(0, (8 * (out.bytesSent - prev.bytesSent)) / 1000 / secs);
    out.recvKbps = Math.max(0, (8 * (out.bytesReceived - prev.bytesReceived)) / 1000 / secs);
    const dLost = out.packetsLost - prev.packetsLost;
    const dAll = dLost + out.packetsReceived - prev.packetsReceived;
    if (dAll > 0) out.lossPct = (100 * Math.max(0, dLost)) / dAll;
  }
  return out;
}

function codecName(codec) {
  const name = (codec.mimeType || "").split("/").pop();
  return codec.clockRate && name ? `${name}/${codec.clockRate}` : name || "?";
}
