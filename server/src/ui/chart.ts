// A small area chart as inline SVG (no library, no script, no style
// attribute: the CSP allows none inline, and presentation attributes are not
// styles). One path of steps per series keeps a day of five-minute buckets to a few KB.
import { html, type Html } from './html.ts';

const W = 576;
const H = 96;

export interface ChartOptions {
  /** What is counted, for the accessible name ("Pulls per 5 minutes…"). */
  title: string;
  values: number[];
  /** How a value reads (the peak in the label and the description). */
  format: (v: number) => string;
  /** The first and last bucket's labels under the axis. */
  from: string;
  to: string;
  id: string;
}

export function areaChart(o: ChartOptions): Html {
  const max = Math.max(0, ...o.values);
  const total = o.values.reduce((a, b) => a + b, 0);
  // Steps, one per bucket: a lone busy five minutes shows as a block, not a hairline.
  const step = W / Math.max(o.values.length, 1);
  const y = (v: number) => (max > 0 ? H - (v / max) * (H - 4) : H).toFixed(1);
  const area = `M0,${H} ${o.values.map((v, i) => `V${y(v)} H${((i + 1) * step).toFixed(1)}`).join(' ')} V${H} Z`;
  const description = `Total ${o.format(total)}; peak ${o.format(max)} in five minutes; from ${o.from} to ${o.to}.`;
  return html`<figure class="chart">
<figcaption><strong id="${o.id}-t">${o.title}</strong>: ${description}</figcaption>
<svg viewBox="0 -14 ${W} ${H + 30}" width="100%" role="img" aria-labelledby="${o.id}-t">
<line x1="0" y1="${H}" x2="${W}" y2="${H}" stroke="#4a5360" stroke-width="1"/>
<path d="${area}" fill="#cfe0f3" stroke="#0b5cad" stroke-width="1.5" vector-effect="non-scaling-stroke"/>
<text x="0" y="-3" font-size="11" fill="#4a5360">peak ${o.format(max)}</text>
<text x="0" y="${H + 14}" font-size="11" fill="#4a5360">${o.from}</text>
<text x="${W}" y="${H + 14}" font-size="11" fill="#4a5360" text-anchor="end">${o.to}</text>
</svg>
</figure>`;
}
