// The console's own script: charts (uPlot) drawn from the curves the server embeds in the page,
// extended live from the job's event stream, and the playground's streaming chat. Loaded with
// `defer`, after htmx and uPlot. window.llmkubeConsole.charts exposes each chart (tests read
// their data there, not from pixels).
"use strict";

const llmkubeConsole = (window.llmkubeConsole = { charts: {} });
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

// Series with steps of their own, aligned on the union of their steps (null where a series has
// no point), as uPlot wants its data.
function align(series) {
  const steps = [...new Set(series.flatMap((s) => s.steps))].sort((a, b) => a - b);
  const at = new Map(steps.map((step, i) => [step, i]));
  const columns = series.map((s) => {
    const column = new Array(steps.length).fill(null);
    s.steps.forEach((step, i) => (column[at.get(step)] = s.values[i]));
    return column;
  });
  return [steps, ...columns];
}

// `dots`: draw each point (evaluations are few; a training curve's points would blur).
function drawChart(element, labels, series, dots = false) {
  const width = Math.max(320, element.clientWidth || 480);
  const options = {
    width,
    height: 220,
    scales: { x: { time: false } },
    // uPlot pads every tick to the step's decimals ("0,000"); plain numbers read better.
    axes: [{ label: "step" }, { values: (u, ticks) => ticks.map((v) => +v.toPrecision(6)) }],
    series: [
      { label: "step" },
      ...labels.map((label, i) => ({
        label,
        stroke: PALETTE[i % PALETTE.length],
        width: 1.5,
        spanGaps: true,
        points: { show: dots === true || dots[i] === true || series[i].steps.length < 3 },
      })),
    ],
  };
  const chart = new uPlot(options, align(series), element);
  chart.llmkubeSeries = series;
  llmkubeConsole.charts[element.dataset.chart] = chart;
  return chart;
}

function extend(chart, additions) {
  additions.forEach((add, i) => {
    const own = chart.llmkubeSeries[i];
    own.steps.push(...add.steps);
    own.values.push(...add.values);
  });
  chart.setData(align(chart.llmkubeSeries));
}

const JOB_CHARTS = {
  loss: { labels: ["train loss", "eval loss"], curves: ["train_loss", "eval_loss"] },
  learning_rate: { labels: ["learning rate"], curves: ["learning_rate"] },
  tokens_per_second: { labels: ["tokens/s"], curves: ["tokens_per_second"] },
};

function copy(curve) {
  return { steps: [...curve.steps], values: [...curve.values] };
}

function jobPage() {
  const holder = document.getElementById("job-charts");
  const data = document.getElementById("curves");
  if (!holder || !data) return;
  const curves = JSON.parse(data.textContent);
  for (const element of holder.querySelectorAll(".chart")) {
    const spec = JOB_CHARTS[element.dataset.chart];
    const dots = spec.curves.map((name) => name === "eval_loss");
    drawChart(element, spec.labels, spec.curves.map((name) => copy(curves[name])), dots);
  }
  // New points arrive on a stream of their own (htmx swaps the page's other live parts).
  const stream = new EventSource(`${holder.dataset.points}?after=${curves.last_step}`);
  stream.addEventListener("points", (message) => {
    const points = JSON.parse(message.data);
    for (const [name, spec] of Object.entries(JOB_CHARTS)) {
      extend(llmkubeConsole.charts[name], spec.curves.map((curve) => points[curve]));
    }
  });
  window.addEventListener("pagehide", () => stream.close());
}

function comparePage() {
  const data = document.getElementById("compare-curves");
  if (!data) return;
  const runs = JSON.parse(data.textContent);
  const names = Object.keys(runs);
  for (const curve of ["train_loss", "eval_loss"]) {
    const element = document.querySelector(`[data-chart="compare_${curve}"]`);
    drawChart(element, names, names.map((name) => copy(runs[name][curve])), curve === "eval_loss");
  }
}

// The playground: the console relays to the deployment's OpenAI API and returns its stream.
function playground() {
  const root = document.getElementById("playground");
  if (!root) return;
  const api = root.dataset.api;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const history = [];
  // The deployment's own API key, if it wants one: kept in this page only, sent per request.
  const keyHeaders = () => ($("api_key") && $("api_key").value ? { "X-Deployment-Api-Key": $("api_key").value } : {});

  fetch(`${api}/models`, { headers: keyHeaders() })
    .then((r) => (r.ok ? r.json() : { data: [] }))
    .then((models) => {
      if (models.data && models.data.length) {
        $("model").replaceChildren(
          ...models.data.map((m) => Object.assign(document.createElement("option"), { textContent: m.id }))
        );
      }
      $("model").dataset.loaded = "true";
    });

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = `message ${role}`;
    div.textContent = text;
    $("messages").append(div);
    return div;
  }

  $("clear").addEventListener("click", () => {
    history.length = 0;
    $("messages").replaceChildren();
    $("stats").textContent = "";
  });

  $("ask").addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = $("prompt").value;
    if (!prompt.trim()) return;
    const completion = $("mode-completion").checked;
    const body = {
      model: $("model").value,
      temperature: Number($("temperature").value),
      top_p: Number($("top_p").value),
      max_tokens: Number($("max_tokens").value),
      stream: true,
      stream_options: { include_usage: true },
    };
    if (completion) {
      body.prompt = prompt;
    } else {
      history.push({ role: "user", content: prompt });
      const system = $("system").value.trim();
      body.messages = system ? [{ role: "system", content: system }, ...history] : [...history];
    }
    bubble("user", prompt);
    $("prompt").value = "";
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    $("send").disabled = true;
    const started = performance.now();
    let first = null;
    let tokens = 0;
    try {
      const response = await fetch(`${api}/${completion ? "completions" : "chat"}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, ...keyHeaders() },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const failure = await response.json().catch(() => ({}));
        throw new Error((failure.error && failure.error.message) || `HTTP ${response.status}`);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const events = buffer.split("\n\n");
        buffer = events.pop();
        for (const raw of events) {
          const line = raw.split("\n").find((l) => l.startsWith("data: "));
          if (!line || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          if (chunk.usage) tokens = chunk.usage.completion_tokens;
          const choice = chunk.choices && chunk.choices[0];
          const text = choice ? (completion ? choice.text : choice.delta && choice.delta.content) : "";
          if (text) {
            if (first === null) first = performance.now();
            answer.textContent += text;
          }
        }
      }
      if (!completion) history.push({ role: "assistant", content: answer.textContent });
      const seconds = (performance.now() - started) / 1000;
      const ttft = first === null ? seconds : (first - started) / 1000;
      const decoding = Math.max(seconds - ttft, 1e-3);
      $("stats").textContent =
        `TTFT ${ttft.toFixed(2)} s · ${tokens} tokens · ` +
        `${(tokens > 1 ? (tokens - 1) / decoding : 0).toFixed(1)} tokens/s`;
      $("stats").dataset.ttft = ttft.toFixed(3);
      $("stats").dataset.tokens = String(tokens);
    } catch (failure) {
      answer.classList.add("error");
      answer.textContent = `error: ${failure.message}`;
      if (!completion) history.pop();
    } finally {
      answer.classList.remove("streaming");
      $("send").disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  jobPage();
  comparePage();
  playground();
});
