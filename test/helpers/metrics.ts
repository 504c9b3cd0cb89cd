/** Reads one counter from a node's Prometheus endpoint (real HTTP scrape). */
export async function scrape(url: string): Promise<string> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  return r.text();
}

export function metricValue(text: string, family: string, counter: string): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${family}{`)) continue;
    if (!line.includes(`counter="${counter}"`)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return Number.NaN;
}
