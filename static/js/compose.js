/* Compose page: move ticked search results into the chosen areas, tell the preview to refresh, echo the sender. */
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
        picked.appendChild(box.closest("li"));
      }
    } else if (!box.checked && picked.contains(box)) {
      box.closest("li").remove();
    }
    document.body.dispatchEvent(new Event("areas-changed"));
  });
  var sender = form.querySelector("#id_sender");
  var shown = form.querySelector("[data-sender-preview]");
  if (sender && shown) {
    sender.addEventListener("input", function () { shown.textContent = sender.value; });
  }
})();
