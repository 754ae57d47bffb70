/* Compose page: move ticked search results into the chosen areas, tell the preview to refresh, echo the sender and warn when it is long. */
(function () {
  "use strict";
  var form = document.getElementById("campaign-form");
  if (!form) return;
  var picked = form.querySelector("[data-picked]");
  form.addEventListener("change", function (event) {
    var box = event.target;
    if (box.name !== "area_codes") return;
    if (box.hasAttribute("data-area-result") && box.checked) {
      if (picked.querySelector('input[value="' + CSS.escape(box.value) + '"]')) {
        box.closest("li").remove();
      } else {
        box.removeAttribute("data-area-result");
        // A chosen area is not drilled into (it includes everything below it): its "Below" button stays behind.
        var chosen = box.closest("li");
        chosen.querySelectorAll("button").forEach(function (button) { button.remove(); });
        picked.appendChild(chosen);
      }
    } else if (!box.checked && picked.contains(box)) {
      box.closest("li").remove();
    }
    document.body.dispatchEvent(new Event("areas-changed"));
  });
  // Show only the schedule fields of the chosen kind; hidden fields keep their values and the server ignores them.
  function showScheduleKind() {
    var chosen = form.querySelector('input[name="schedule_kind"]:checked');
    var kind = chosen ? chosen.value : "now";
    form.querySelectorAll("[data-kinds]").forEach(function (block) {
      block.hidden = block.getAttribute("data-kinds").split(" ").indexOf(kind) === -1;
    });
  }
  form.querySelectorAll('input[name="schedule_kind"]').forEach(function (radio) {
    radio.addEventListener("change", showScheduleKind);
  });
  showScheduleKind();

  // The broadcast window belongs to area broadcasts only, the schedule to targeted sends: an area broadcast goes
  // out once, in its window, without quiet hours, and the server refuses any other schedule for it. Switching to
  // an area broadcast sets the hidden schedule so and keeps what was chosen, put back on switching back. This
  // script runs before htmx (deferred) listens, so the preview the mode's change asks for reads the schedule set.
  var mode = form.querySelector("#id_mode");
  var targetedSchedule = null;
  function scheduleFields() {
    return form.querySelectorAll('input[name="schedule_kind"], #id_quiet_start, #id_quiet_end');
  }
  function setBroadcastSchedule() {
    // Every value is kept before any is set: checking "now" unchecks the kind chosen.
    targetedSchedule = Array.prototype.map.call(scheduleFields(), function (field) {
      return [field, field.type === "radio" ? field.checked : field.value];
    });
    scheduleFields().forEach(function (field) {
      if (field.type === "radio") field.checked = field.value === "now";
      else field.value = "";
    });
  }
  function restoreTargetedSchedule() {
    if (!targetedSchedule) return;
    targetedSchedule.forEach(function (kept) {
      if (kept[0].type === "radio") kept[0].checked = kept[1];
      else kept[0].value = kept[1];
    });
    targetedSchedule = null;
    showScheduleKind();
  }
  function showMode() {
    form.querySelectorAll("[data-modes]").forEach(function (block) {
      block.hidden = block.getAttribute("data-modes").split(" ").indexOf(mode.value) === -1;
    });
  }
  if (mode) {
    mode.addEventListener("change", function () {
      if (mode.value === "area_broadcast") setBroadcastSchedule();
      else restoreTargetedSchedule();
      showMode();
    });
    showMode();
  }

  var sender = form.querySelector("#id_sender");
  var shown = form.querySelector("[data-sender-preview]");
  var warning = form.querySelector("[data-sender-warning]");
  if (sender && shown) {
    sender.addEventListener("input", function () {
      shown.textContent = sender.value;
      // Handsets show only the first characters of a long sender ID; the server accepts it with this warning.
      if (warning) warning.hidden = sender.value.trim().length <= Number(sender.getAttribute("data-sender-shown"));
    });
  }
})();
